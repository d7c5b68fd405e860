"""Signing up, logging in, and what a token can and cannot do."""

import base64
import json
import threading
import time
import uuid
import warnings

import jsonschema_rs
import jwt as pyjwt
import pytest
from sqlalchemy import select

from devlab.extensions import db
from devlab.models import User
from tests.conftest import PASSWORD, TEST_SETTINGS, without_request_id

SIGNING_KEY = TEST_SETTINGS["JWT_SECRET_KEY"]


def signup(client, username="alice", email=None, password=PASSWORD, **extra):
    body = {"username": username, "email": email or f"{username}@example.com", "password": password}
    return client.post("/signup", json=body | extra)


def login(client, username="alice", password=PASSWORD):
    return client.post("/login", json={"username": username, "password": password})


def test_signup_returns_the_user_without_any_password_field(client):
    response = signup(client, "alice")

    assert response.status_code == 201
    user = response.get_json()
    assert set(user) == {"id", "username", "email", "is_admin", "is_active", "created_at"}
    assert user["is_active"] is True
    assert user["username"] == "alice"
    assert user["email"] == "alice@example.com"
    assert user["is_admin"] is False


def test_signup_stores_an_argon2id_hash_not_the_password(app, client):
    signup(client, "alice")

    with app.app_context():
        stored = db.session.scalar(select(User.hashed_password))
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize(
    "password",
    [
        "p" * 100,  # over bcrypt's 72 bytes, which crashed the earlier version
        "пароль-密码-🔑" * 8,  # multi-byte Unicode, well over 72 bytes
        "x" * 1024,
        "8c-h4rs!",
        "  spaces count too  ",
    ],
    ids=["100-bytes", "multibyte", "1024-chars", "8-chars", "spaces"],
)
def test_any_password_of_8_to_1024_characters_signs_up_and_logs_in(client, password):
    assert signup(client, "alice", password=password).status_code == 201

    response = login(client, "alice", password)

    assert response.status_code == 200
    assert login(client, "alice", "!" + password[1:]).status_code == 401


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "ab"),
        ("username", "a" * 33),
        ("username", "has space"),
        ("username", "semi;colon"),
        ("username", "ünïcode"),
        ("username", 123),
        ("email", "not-an-email"),
        ("email", "a@" + "b" * 250 + ".com"),
        ("email", None),
        ("password", "short"),
        ("password", "x" * 1025),
        ("password", ["a", "list"]),
    ],
)
def test_signup_rejects_invalid_fields_with_422_naming_the_field(client, field, value):
    body = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    body[field] = value

    response = client.post("/signup", json=body)

    assert response.status_code == 422
    assert field in response.get_json()["errors"]["json"]


@pytest.mark.parametrize(
    ("email", "accepted"),
    [
        ("alice@example.com", True),
        ("A.B+tag@Mail.Example.ORG", True),
        ("o'neil{x}@sub-domain.example.museum", True),
        (f"{'a' * 64}@example.com", True),
        ("0@0.a", False),  # schemathesis' find: RFC 5321 takes it, the API never did
        ("alice@localhost", False),
        ("alice@[127.0.0.1]", False),
        ('"quoted"@example.com', False),
        ("josé@example.com", False),
        ("a..b@example.com", False),
        ("alice@-example.com", False),
        (f"{'a' * 65}@example.com", False),
        ("alice@example.com\n", False),
    ],
)
def test_signup_takes_exactly_the_emails_the_openapi_document_allows(client, email, accepted):
    signup_schema = client.get("/openapi.json").get_json()["components"]["schemas"]["Signup"]
    documented = jsonschema_rs.validator_for(
        signup_schema["properties"]["email"], validate_formats=True
    )

    response = signup(client, "alice", email=email)

    assert documented.is_valid(email) is accepted
    assert response.status_code == (201 if accepted else 422), response.get_json()


def test_a_username_with_a_trailing_newline_answers_422(client):
    response = signup(client, "alice\n", email="alice@example.com")

    assert response.status_code == 422
    assert "username" in response.get_json()["errors"]["json"]


@pytest.mark.parametrize("missing", ["username", "email", "password"])
def test_signup_without_a_field_answers_422(client, missing):
    body = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    del body[missing]

    response = client.post("/signup", json=body)

    assert response.status_code == 422
    assert response.get_json()["errors"]["json"][missing] == ["Missing data for required field."]


def test_signup_cannot_make_itself_admin(app, client):
    response = signup(client, "mallory", is_admin=True)

    assert response.status_code == 422
    assert "is_admin" in response.get_json()["errors"]["json"]
    with app.app_context():
        assert db.session.scalar(select(User).where(User.username == "mallory")) is None


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (("alice", "alice@example.com"), ("ALICE", "other@example.com"), "username"),
        (("alice", "alice@example.com"), ("bob", "Alice@Example.COM"), "email"),
    ],
    ids=["username-any-case", "email-any-case"],
)
def test_duplicate_username_or_email_answers_409(client, first, second, message):
    assert signup(client, *first).status_code == 201

    response = signup(client, *second)

    assert response.status_code == 409
    body = response.get_json()
    assert body["code"] == 409
    assert message in body["message"].lower()


def test_racing_signups_for_one_name_create_one_user(app):
    results = []
    start = threading.Barrier(6)

    def attempt(i):
        start.wait()
        response = app.test_client().post(
            "/signup",
            json={"username": "racer", "email": f"racer{i}@example.com", "password": PASSWORD},
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [201, 409, 409, 409, 409, 409]
    with app.app_context():
        assert len(db.session.scalars(select(User)).all()) == 1


def test_login_returns_a_bearer_token_with_role_claims(client):
    user = signup(client, "alice").get_json()

    response = login(client, "alice")

    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    header = pyjwt.get_unverified_header(body["access_token"])
    claims = pyjwt.decode(body["access_token"], SIGNING_KEY, algorithms=["HS256"])
    assert header["alg"] == "HS256"
    assert claims["sub"] == str(user["id"])
    assert claims["is_admin"] is False
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert claims["jti"]
    assert "csrf" not in claims  # headers only: no cookie, so no CSRF token to carry


def test_login_username_is_case_insensitive(client):
    signup(client, "Alice")

    assert login(client, "aLiCe").status_code == 200


def test_login_accepts_an_oauth2_password_form(client):
    signup(client, "alice")

    response = client.post(
        "/login",
        data={"grant_type": "password", "username": "alice", "password": PASSWORD, "scope": ""},
    )

    assert response.status_code == 200
    assert response.get_json()["token_type"] == "bearer"


def test_login_form_with_another_grant_type_answers_422(client):
    signup(client, "alice")

    response = client.post(
        "/login",
        data={"grant_type": "client_credentials", "username": "alice", "password": PASSWORD},
    )

    assert response.status_code == 422
    assert "grant_type" in response.get_json()["errors"]["json_or_form"]


def test_wrong_password_and_unknown_user_get_the_same_401(client):
    signup(client, "alice")

    wrong_password = login(client, "alice", "not the password")
    unknown_user = login(client, "nobody", "not the password")

    assert wrong_password.status_code == unknown_user.status_code == 401
    assert without_request_id(wrong_password) == without_request_id(unknown_user)
    assert wrong_password.get_json()["message"] == "Incorrect username or password."


def test_me_returns_the_tokens_user(client, accounts):
    headers = accounts.headers("alice")

    response = client.get("/me", headers=headers)

    assert response.status_code == 200
    assert response.get_json()["username"] == "alice"


def _token(claims: dict, key: str = SIGNING_KEY, algorithm: str = "HS256") -> str:
    now = int(time.time())
    payload = {"iat": now, "nbf": now, "exp": now + 600, "jti": "x", "type": "access"}
    with warnings.catch_warnings():  # PyJWT warns that our key is short for HS512
        warnings.simplefilter("ignore")
        return pyjwt.encode(payload | claims, key, algorithm=algorithm)


def _unsigned(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims | {'exp': now + 600})}."


def _bearer(token: str) -> str:
    return f"Bearer {token}"


# Each builds an Authorization header from the family id of alice's live login, so that a
# crafted token fails for its one flaw and not for lacking a family.
BAD_AUTHORIZATIONS = {
    "missing": lambda fam: None,
    "basic": lambda fam: "Basic YWxpY2U6cGFzc3dvcmQ=",
    "empty-bearer": lambda fam: "Bearer ",
    "bearer-without-space": lambda fam: "Bearer",
    "garbage": lambda fam: "Bearer not.a.jwt",
    "two-tokens": lambda fam: "Bearer a b",
    "bad-signature": lambda fam: _bearer(
        _token({"sub": "1", "fam": fam}, key="another-key-another-key-another-key")
    ),
    "expired": lambda fam: _bearer(_token({"sub": "1", "fam": fam, "exp": int(time.time()) - 10})),
    "alg-none": lambda fam: _bearer(_unsigned({"sub": "1", "fam": fam, "type": "access"})),
    "hs512": lambda fam: _bearer(_token({"sub": "1", "fam": fam}, algorithm="HS512")),
    "non-numeric-sub": lambda fam: _bearer(_token({"sub": "alice", "fam": fam})),
    "someone-elses-family": lambda fam: _bearer(_token({"sub": "2", "fam": fam})),
    "no-family": lambda fam: _bearer(_token({"sub": "1"})),
    "unknown-family": lambda fam: _bearer(_token({"sub": "1", "fam": str(uuid.uuid4())})),
    "refresh-token-as-access": lambda fam: _bearer(
        _token({"sub": "1", "fam": fam, "type": "refresh"})
    ),
}


def alices_family(client, accounts) -> str:
    """Sign alice (user 1) and bob (user 2) up; return the family id of alice's login."""
    accounts.signup("alice")
    accounts.signup("bob")
    return pyjwt.decode(accounts.token("alice"), SIGNING_KEY, algorithms=["HS256"])["fam"]


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS.values(), ids=BAD_AUTHORIZATIONS)
def test_every_kind_of_bad_token_answers_json_401(client, accounts, authorization):
    header = authorization(alices_family(client, accounts))
    headers = {"Authorization": header} if header is not None else {}

    response = client.get("/me", headers=headers)

    assert response.status_code == 401
    assert response.is_json
    body = response.get_json()
    assert body["code"] == 401
    assert body["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_token_from_our_key_with_the_right_user_is_accepted(client, accounts):
    """The control for the test above: its crafted tokens fail for their flaw alone."""
    fam = alices_family(client, accounts)

    response = client.get(
        "/me", headers={"Authorization": _bearer(_token({"sub": "1", "fam": fam}))}
    )

    assert response.status_code == 200


def test_a_username_that_only_lowers_to_an_existing_one_matches_nobody(client, accounts):
    accounts.signup("kim")

    response = login(client, "\u212aim")  # KELVIN SIGN, which Python lowers to "k"

    assert response.status_code == 401


@pytest.mark.parametrize("username", ["alice", "nobody"])
def test_a_failed_login_also_carries_rfc_6749s_error_for_oauth2_clients(client, accounts, username):
    """Swagger UI's Authorize dialog shows `error` and `error_description` of the token
    endpoint's answer; the rest of the body is the usual error shape."""
    accounts.signup("alice")

    response = client.post("/login", data={"username": username, "password": "wrong password"})

    body = response.get_json()
    assert response.status_code == 401
    assert body["error"] == "invalid_grant"
    assert body["error_description"] == body["message"] == "Incorrect username or password."
