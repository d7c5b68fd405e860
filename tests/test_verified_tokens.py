"""A token's signature is checked once per process (devlab/extensions.py's JWTManager); every
rule that decides whether it still works is applied on each request all the same."""

import time
from datetime import timedelta

import jwt as pyjwt

from devlab import create_app
from devlab.extensions import VERIFIED_TOKENS
from tests.conftest import PASSWORD, TEST_SETTINGS


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_seen_before_is_refused_once_it_expires(app, accounts):
    short_lived = create_app(TEST_SETTINGS | {"JWT_ACCESS_TOKEN_EXPIRES": timedelta(seconds=1)})
    client = short_lived.test_client()
    accounts.signup("alice")
    login = client.post("/login", json={"username": "alice", "password": PASSWORD})
    token = login.get_json()["access_token"]
    assert client.get("/me", headers=bearer(token)).status_code == 200
    assert token in short_lived.extensions[VERIFIED_TOKENS]  # the next request reuses it

    expires_at = pyjwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0, expires_at - time.time()) + 0.1)
    response = client.get("/me", headers=bearer(token))

    assert response.status_code == 401
    assert response.get_json()["message"] == "Token has expired; refresh it or log in again."


def test_a_token_seen_before_is_refused_once_its_login_ends(client, accounts):
    accounts.signup("alice")
    token = accounts.token("alice")
    assert client.get("/me", headers=bearer(token)).status_code == 200

    assert client.post("/logout", headers=bearer(token)).status_code == 204
    response = client.get("/me", headers=bearer(token))

    assert response.status_code == 401
    assert response.get_json()["message"] == "Token has been revoked; log in again."


def test_only_the_very_token_verified_is_reused(app, client, accounts):
    accounts.signup("alice")
    token = accounts.token("alice")
    assert client.get("/me", headers=bearer(token)).status_code == 200
    claims = pyjwt.decode(token, options={"verify_signature": False})
    header, payload, signature = token.split(".")
    other_signature = "A" + signature[1:] if signature[0] != "A" else "B" + signature[1:]
    forgeries = [
        pyjwt.encode(claims, "another-key-that-is-long-enough-for-hs256", algorithm="HS256"),
        f"{header}.{payload}.{other_signature}",
        f"{header}.{payload}.",
        pyjwt.encode(claims | {"sub": "2"}, "another-key-that-is-long-enough-for-hs256"),
    ]

    for forged in forgeries:
        response = client.get("/me", headers=bearer(forged))

        assert response.status_code == 401, forged
        assert forged not in app.extensions[VERIFIED_TOKENS]
