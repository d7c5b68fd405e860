"""Admin routes over HTTP: who may use them, and that the database decides, not the token."""

from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest

from devlab.extensions import db
from devlab.models import User
from tests.conftest import delete_user_behind_the_apps_back

USER_FIELDS = {"id", "username", "email", "is_admin", "is_active", "created_at"}
ADMIN_ROUTES = [("get", "/admin/users"), ("post", "/admin/promote/1"), ("get", "/audit/logs")]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def me(client, headers: dict) -> dict:
    response = client.get("/me", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- who may call admin routes ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_without_a_token_answer_401(client, method, path):
    response = getattr(client, method)(path)

    assert response.status_code == 401
    assert response.get_json()["code"] == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_answer_403_to_a_normal_user(client, accounts, method, path):
    headers = accounts.headers("alice")

    response = getattr(client, method)(path, headers=headers)

    assert response.status_code == 403
    assert response.get_json()["code"] == 403
    assert me(client, headers)["is_admin"] is False


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_a_forged_admin_token_answers_401(client, accounts, method, path):
    user = accounts.signup("mallory")
    now = datetime.now(UTC)
    claims = {
        "sub": str(user["id"]),
        "is_admin": True,
        "type": "access",
        "fresh": False,
        "jti": "forged",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=15),
    }
    forged = pyjwt.encode(claims, "a-key-that-is-not-the-servers-signing-key!!", "HS256")

    response = getattr(client, method)(path, headers=bearer(forged))

    assert response.status_code == 401
    assert response.get_json()["code"] == 401


def test_an_expired_admin_token_answers_401(app, client, accounts):
    headers = accounts.admin_headers("root")
    root_id = me(client, headers)["id"]
    past = datetime.now(UTC) - timedelta(hours=1)
    claims = {
        "sub": str(root_id),
        "is_admin": True,
        "type": "access",
        "fresh": False,
        "jti": "expired",
        "iat": past,
        "nbf": past,
        "exp": past + timedelta(minutes=15),
    }
    expired = pyjwt.encode(claims, app.config["JWT_SECRET_KEY"], "HS256")

    response = client.get("/admin/users", headers=bearer(expired))

    assert response.status_code == 401
    assert response.get_json()["code"] == 401
    assert client.get("/admin/users", headers=headers).status_code == 200


def test_an_unsigned_admin_token_answers_401(client, accounts):
    user = accounts.signup("mallory")
    claims = {"sub": str(user["id"]), "is_admin": True, "type": "access", "jti": "none"}
    unsigned = pyjwt.encode(claims, None, algorithm="none")

    response = client.get("/admin/users", headers=bearer(unsigned))

    assert response.status_code == 401
    assert response.get_json()["code"] == 401


# --- GET /admin/users -------------------------------------------------------------------------


def test_an_admin_lists_every_user_oldest_first(client, accounts):
    headers = accounts.admin_headers("root")
    accounts.signup("alice")
    accounts.signup("bob")

    response = client.get("/admin/users", headers=headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (3, 1, 20, 1)
    assert [user["username"] for user in body["users"]] == ["root", "alice", "bob"]
    assert [user["is_admin"] for user in body["users"]] == [True, False, False]


def test_the_user_list_never_shows_a_password_or_its_hash(client, accounts):
    headers = accounts.admin_headers("root")
    accounts.signup("alice")

    response = client.get("/admin/users", headers=headers)

    assert response.status_code == 200
    for user in response.get_json()["users"]:
        assert set(user) == USER_FIELDS
    text = response.get_data(as_text=True).lower()
    assert "password" not in text
    assert "hash" not in text
    assert "argon2" not in text


def test_the_user_list_pages(client, accounts):
    headers = accounts.admin_headers("root")
    for name in ("alice", "bob", "carol", "dave"):
        accounts.signup(name)

    response = client.get("/admin/users?page=2&page_size=2", headers=headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (5, 2, 2, 3)
    assert [user["username"] for user in body["users"]] == ["bob", "carol"]


@pytest.mark.parametrize("query", ["page=0", "page_size=0", "page_size=101", "page=x"])
def test_a_bad_user_list_page_answers_422(client, accounts, query):
    headers = accounts.admin_headers("root")

    response = client.get(f"/admin/users?{query}", headers=headers)

    assert response.status_code == 422
    assert response.get_json()["errors"]["query"]


# --- POST /admin/promote/<id> -----------------------------------------------------------------


def test_an_admin_promotes_a_user(client, accounts):
    headers = accounts.admin_headers("root")
    bob = accounts.signup("bob")
    bob_headers = bearer(accounts.token("bob"))

    response = client.post(f"/admin/promote/{bob['id']}", headers=headers)

    assert response.status_code == 200
    promoted = response.get_json()
    assert set(promoted) == USER_FIELDS
    assert (promoted["id"], promoted["username"], promoted["is_admin"]) == (bob["id"], "bob", True)
    assert me(client, bob_headers)["is_admin"] is True


def test_promoting_an_admin_again_answers_200_and_changes_nothing(client, accounts):
    headers = accounts.admin_headers("root")
    bob = accounts.signup("bob")
    first = client.post(f"/admin/promote/{bob['id']}", headers=headers)

    second = client.post(f"/admin/promote/{bob['id']}", headers=headers)

    assert second.status_code == 200
    assert second.get_json()["is_admin"] is True
    assert second.get_json() == first.get_json()


def test_an_admin_promoting_themselves_answers_200(client, accounts):
    headers = accounts.admin_headers("root")
    root = me(client, headers)

    response = client.post(f"/admin/promote/{root['id']}", headers=headers)

    assert response.status_code == 200
    assert response.get_json()["is_admin"] is True


@pytest.mark.parametrize("user_id", ["999", "2147483648", "99999999999999999999"])
def test_promoting_an_unknown_user_answers_404(client, accounts, user_id):
    headers = accounts.admin_headers("root")

    response = client.post(f"/admin/promote/{user_id}", headers=headers)

    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["code"] == 404


@pytest.mark.parametrize("target", ["bob", "alice"], ids=["someone-else", "themselves"])
def test_a_normal_user_cannot_promote_anyone(client, accounts, target):
    alice_headers = accounts.headers("alice")
    accounts.signup("bob")
    target_headers = bearer(accounts.token(target))
    target_id = me(client, target_headers)["id"]

    response = client.post(f"/admin/promote/{target_id}", headers=alice_headers)

    assert response.status_code == 403
    assert response.get_json()["code"] == 403
    assert me(client, target_headers)["is_admin"] is False


# --- the database decides the role, not the token ---------------------------------------------


@pytest.mark.parametrize("path", ["/admin/users", "/audit/logs"])
def test_a_promoted_user_is_an_admin_at_once_with_the_token_they_already_hold(
    client, accounts, path
):
    admin_headers = accounts.admin_headers("root")
    bob = accounts.signup("bob")
    bob_headers = bearer(accounts.token("bob"))  # issued while bob was not an admin
    before = client.get(path, headers=bob_headers)
    client.post(f"/admin/promote/{bob['id']}", headers=admin_headers)

    after = client.get(path, headers=bob_headers)

    assert before.status_code == 403
    assert after.status_code == 200


def test_a_promoted_user_can_promote_others_with_their_old_token(client, accounts):
    admin_headers = accounts.admin_headers("root")
    bob = accounts.signup("bob")
    bob_headers = bearer(accounts.token("bob"))
    carol = accounts.signup("carol")
    client.post(f"/admin/promote/{bob['id']}", headers=admin_headers)

    response = client.post(f"/admin/promote/{carol['id']}", headers=bob_headers)

    assert response.status_code == 200
    assert response.get_json()["is_admin"] is True


def test_a_demoted_admin_loses_admin_routes_despite_the_claim_in_their_token(app, client, accounts):
    headers = accounts.admin_headers("root")  # the token was issued before promotion...
    token = accounts.token("root")  # ...so log in again for one that claims is_admin
    claims = pyjwt.decode(token, options={"verify_signature": False})
    root_id = int(claims["sub"])
    with app.app_context():
        db.session.get(User, root_id).is_admin = False
        db.session.commit()

    response = client.get("/admin/users", headers=bearer(token))

    assert claims["is_admin"] is True
    assert response.status_code == 403
    assert client.get("/admin/users", headers=headers).status_code == 403


@pytest.mark.parametrize("path", ["/me", "/notes", "/admin/users", "/audit/logs"])
def test_the_token_of_a_deleted_user_answers_401(app, client, accounts, path):
    headers = accounts.admin_headers("root")
    root_id = me(client, headers)["id"]
    delete_user_behind_the_apps_back(app, root_id)

    response = client.get(path, headers=headers)

    assert response.status_code == 401
    assert response.get_json()["code"] == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
