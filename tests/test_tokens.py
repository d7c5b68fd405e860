"""Refresh tokens, rotation, reuse detection, logout, password changes and pruning."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import jwt as pyjwt
import pytest
from sqlalchemy import select, text, update

from devlab import passwords
from devlab.extensions import db
from devlab.models import TokenFamily, utcnow
from tests.conftest import PASSWORD, TEST_SETTINGS
from tests.locks import holding_lock, wait_for_lock_waiters

NEW_PASSWORD = "a brand new passphrase"
LOCK_ALICE = "SELECT id FROM users WHERE username = 'alice' FOR UPDATE"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def login(client, username="alice", password=PASSWORD) -> dict:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def refresh(client, refresh_token: str):
    return client.post("/token/refresh", headers=bearer(refresh_token))


def claims(token: str) -> dict:
    return pyjwt.decode(token, TEST_SETTINGS["JWT_SECRET_KEY"], algorithms=["HS256"])


def test_login_returns_a_refresh_token_of_the_same_login(client, accounts):
    accounts.signup("alice")

    tokens = login(client)

    assert tokens["refresh_expires_in"] == 14 * 24 * 3600
    access, refresh_claims = claims(tokens["access_token"]), claims(tokens["refresh_token"])
    assert access["type"] == "access"
    assert refresh_claims["type"] == "refresh"
    assert refresh_claims["exp"] - refresh_claims["iat"] == 14 * 24 * 3600
    assert access["fam"] == refresh_claims["fam"]
    assert access["sub"] == refresh_claims["sub"]


def test_refresh_returns_new_tokens_that_work(client, accounts, audit_rows):
    accounts.signup("alice")
    first = login(client)

    response = refresh(client, first["refresh_token"])

    assert response.status_code == 200
    second = response.get_json()
    assert set(second) == set(first)
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200
    assert refresh(client, second["refresh_token"]).status_code == 200
    assert len(audit_rows("token_refreshed")) == 2


def test_a_refresh_token_used_twice_revokes_the_whole_login(client, accounts, audit_rows):
    user = accounts.signup("alice")
    first = login(client)
    second = refresh(client, first["refresh_token"]).get_json()

    replay = refresh(client, first["refresh_token"])

    assert replay.status_code == 401
    assert "already used" in replay.get_json()["message"]
    for token in (first["access_token"], second["access_token"]):
        assert client.get("/me", headers=bearer(token)).status_code == 401
    assert refresh(client, second["refresh_token"]).status_code == 401
    [row] = audit_rows("token_reuse_detected")
    assert row.user_id == user["id"]
    assert row.status_code == 401


def test_reuse_of_one_login_leaves_other_logins_alone(client, accounts):
    accounts.signup("alice")
    stolen = login(client)
    other_device = login(client)
    refresh(client, stolen["refresh_token"])

    refresh(client, stolen["refresh_token"])

    assert client.get("/me", headers=bearer(other_device["access_token"])).status_code == 200


def test_racing_refreshes_with_one_token_hand_on_the_login_once(app, accounts):
    """The refreshes queue behind a lock on their family, as when they really overlap."""
    accounts.signup("alice")
    tokens = login(app.test_client())
    family = claims(tokens["access_token"])["fam"]

    def attempt(_):
        return refresh(app.test_client(), tokens["refresh_token"]).status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        with holding_lock(
            app, "SELECT id FROM token_families WHERE id = :id FOR UPDATE", id=family
        ):
            results = [pool.submit(attempt, i) for i in range(3)]
            waiting = wait_for_lock_waiters(app, expected=3)
        statuses = sorted(result.result(timeout=30) for result in results)

    assert waiting == 3
    assert statuses == [200, 401, 401]


@pytest.mark.parametrize("route", ["/me", "/notes"])
def test_a_refresh_token_is_not_an_access_token(client, accounts, route):
    accounts.signup("alice")
    tokens = login(client)

    response = client.get(route, headers=bearer(tokens["refresh_token"]))

    assert response.status_code == 401


def test_an_access_token_is_not_a_refresh_token(client, accounts):
    accounts.signup("alice")
    tokens = login(client)

    response = refresh(client, tokens["access_token"])

    assert response.status_code == 401
    assert response.get_json()["code"] == 401


def test_logout_revokes_the_access_token_and_its_refresh_token(client, accounts, audit_rows):
    user = accounts.signup("alice")
    tokens = login(client)
    other_device = login(client)

    response = client.post("/logout", headers=bearer(tokens["access_token"]))

    assert response.status_code == 204
    assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert refresh(client, tokens["refresh_token"]).status_code == 401
    assert client.get("/me", headers=bearer(other_device["access_token"])).status_code == 200
    [row] = audit_rows("logout")
    assert row.user_id == user["id"]


def test_logout_also_ends_tokens_handed_on_by_refresh(client, accounts):
    accounts.signup("alice")
    first = login(client)
    second = refresh(client, first["refresh_token"]).get_json()

    client.post("/logout", headers=bearer(second["access_token"]))

    assert client.get("/me", headers=bearer(first["access_token"])).status_code == 401


def change_password(client, access_token, current=PASSWORD, new=NEW_PASSWORD):
    return client.post(
        "/me/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(access_token),
    )


def test_password_change_keeps_this_login_and_revokes_every_other(client, accounts, audit_rows):
    user = accounts.signup("alice")
    this_login = login(client)
    other_login = login(client)

    response = change_password(client, this_login["access_token"])

    assert response.status_code == 204
    assert client.get("/me", headers=bearer(this_login["access_token"])).status_code == 200
    assert refresh(client, this_login["refresh_token"]).status_code == 200
    assert client.get("/me", headers=bearer(other_login["access_token"])).status_code == 401
    assert refresh(client, other_login["refresh_token"]).status_code == 401
    assert (
        client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 401
    )
    assert login(client, password=NEW_PASSWORD)["access_token"]
    [row] = audit_rows("password_changed")
    assert row.user_id == user["id"]
    assert PASSWORD not in row.detail and NEW_PASSWORD not in row.detail


def test_wrong_current_password_answers_401_and_changes_nothing(client, accounts, audit_rows):
    accounts.signup("alice")
    this_login = login(client)
    other_login = login(client)

    response = change_password(client, this_login["access_token"], current="not my password")

    assert response.status_code == 401
    assert response.get_json()["message"] == "The current password is incorrect."
    assert client.get("/me", headers=bearer(other_login["access_token"])).status_code == 200
    assert login(client, password=PASSWORD)
    assert audit_rows("password_changed") == []
    assert audit_rows("access_denied")[-1].detail == "wrong current password on password change"


@pytest.mark.parametrize(
    "body",
    [
        {"current_password": PASSWORD},
        {"current_password": PASSWORD, "new_password": "short"},
        {"current_password": PASSWORD, "new_password": "x" * 1025},
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "is_admin": True},
    ],
    ids=["missing-new", "too-short", "too-long", "unknown-field"],
)
def test_password_change_validates_the_new_password(client, accounts, body):
    accounts.signup("alice")
    tokens = login(client)

    response = client.post("/me/password", json=body, headers=bearer(tokens["access_token"]))

    assert response.status_code == 422
    assert login(client, password=PASSWORD)


def test_prune_revocations_deletes_only_expired_entries(app, client, runner, accounts):
    accounts.signup("alice")
    live = login(client)
    revoked_but_unexpired = login(client)
    client.post("/logout", headers=bearer(revoked_but_unexpired["access_token"]))
    for _ in range(2):
        expired_family = claims(login(client)["access_token"])["fam"]
        with app.app_context():
            db.session.execute(
                update(TokenFamily)
                .where(TokenFamily.id == expired_family)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            db.session.commit()

    result = runner.invoke(args=["prune-revocations"])

    assert result.exit_code == 0
    assert "Pruned 2 expired token families." in result.output
    with app.app_context():
        remaining = set(db.session.scalars(select(TokenFamily.id)))
    assert remaining == {
        claims(live["access_token"])["fam"],
        claims(revoked_but_unexpired["access_token"])["fam"],
    }
    assert client.get("/me", headers=bearer(live["access_token"])).status_code == 200
    assert (
        client.get("/me", headers=bearer(revoked_but_unexpired["access_token"])).status_code == 401
    )


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ("UPDATE users SET hashed_password = :other_hash WHERE username = 'alice'", 401),
        ("UPDATE users SET is_active = false WHERE username = 'alice'", 401),
        # The control: waiting behind a change that stops nothing does not fail a login.
        ("UPDATE users SET email = 'new@example.com' WHERE username = 'alice'", 200),
    ],
    ids=["password-changed", "deactivated", "unrelated-change"],
)
def test_a_login_under_way_does_not_outlive_a_change_that_commits_meanwhile(
    app, accounts, change, status
):
    """The login has checked the password when the change commits; a change that should stop
    the login does."""
    accounts.signup("alice")
    with app.app_context():
        other_hash = passwords.hash_password(NEW_PASSWORD)

    def log_in():
        credentials = {"username": "alice", "password": PASSWORD}
        return app.test_client().post("/login", json=credentials).status_code

    with ThreadPoolExecutor(max_workers=1) as pool:
        with holding_lock(app, LOCK_ALICE) as holder:
            attempt = pool.submit(log_in)
            waiting = wait_for_lock_waiters(app, expected=1)
            holder.execute(text(change), {"other_hash": other_hash})
        answered = attempt.result(timeout=30)

    assert waiting == 1
    assert answered == status


def test_a_refresh_waiting_while_its_login_is_revoked_answers_401(app, accounts, audit_rows):
    """A logout or password change commits while the refresh waits for the family's lock."""
    accounts.signup("alice")
    tokens = login(app.test_client())
    family = claims(tokens["access_token"])["fam"]
    lock_family = "SELECT id FROM token_families WHERE id = :id FOR UPDATE"

    with ThreadPoolExecutor(max_workers=1) as pool:
        with holding_lock(app, lock_family, id=family) as holder:
            attempt = pool.submit(lambda: refresh(app.test_client(), tokens["refresh_token"]))
            waiting = wait_for_lock_waiters(app, expected=1)
            holder.execute(
                text("UPDATE token_families SET revoked_at = now() WHERE id = :id"), {"id": family}
            )
        response = attempt.result(timeout=30)

    assert waiting == 1
    assert response.status_code == 401
    assert response.get_json()["message"] == "Token has been revoked; log in again."
    assert audit_rows("access_denied")[-1].detail == "revoked token"
    assert audit_rows("token_refreshed") == []
