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


def pass_the_grace_period(app, tokens: dict, *, seconds_past: float = 1) -> None:
    """Make the family's last rotation as old as the grace period and `seconds_past` more."""
    grace = app.config["JWT_REFRESH_REUSE_GRACE_SECONDS"]
    with app.app_context():
        db.session.execute(
            update(TokenFamily)
            .where(TokenFamily.id == claims(tokens["access_token"])["fam"])
            .values(rotated_at=TokenFamily.rotated_at - timedelta(seconds=grace + seconds_past))
        )
        db.session.commit()


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


def test_a_refresh_token_used_twice_revokes_the_whole_login(app, client, accounts, audit_rows):
    user = accounts.signup("alice")
    first = login(client)
    second = refresh(client, first["refresh_token"]).get_json()
    pass_the_grace_period(app, first)

    replay = refresh(client, first["refresh_token"])

    assert replay.status_code == 401
    assert "already used" in replay.get_json()["message"]
    for token in (first["access_token"], second["access_token"]):
        assert client.get("/me", headers=bearer(token)).status_code == 401
    assert refresh(client, second["refresh_token"]).status_code == 401
    [row] = audit_rows("token_reuse_detected")
    assert row.user_id == user["id"]
    assert row.status_code == 401


def test_reuse_of_one_login_leaves_other_logins_alone(app, client, accounts):
    accounts.signup("alice")
    stolen = login(client)
    other_device = login(client)
    refresh(client, stolen["refresh_token"])
    pass_the_grace_period(app, stolen)

    assert refresh(client, stolen["refresh_token"]).status_code == 401

    assert client.get("/me", headers=bearer(other_device["access_token"])).status_code == 200


def test_racing_refreshes_with_one_token_hand_on_the_login_once(app, accounts, audit_rows):
    """The refreshes queue behind a lock on their family, as when they really overlap: one
    wins, the others are within the grace period, so the winner's new tokens keep working."""
    accounts.signup("alice")
    tokens = login(app.test_client())
    family = claims(tokens["access_token"])["fam"]

    def attempt(_):
        response = refresh(app.test_client(), tokens["refresh_token"])
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(max_workers=3) as pool:
        with holding_lock(
            app, "SELECT id FROM token_families WHERE id = :id FOR UPDATE", id=family
        ):
            results = [pool.submit(attempt, i) for i in range(3)]
            waiting = wait_for_lock_waiters(app, expected=3)
        outcomes = [result.result(timeout=30) for result in results]

    assert waiting == 3
    assert sorted(status for status, _ in outcomes) == [200, 401, 401]
    [winner] = [body for status, body in outcomes if status == 200]
    client = app.test_client()
    assert client.get("/me", headers=bearer(winner["access_token"])).status_code == 200
    assert refresh(client, winner["refresh_token"]).status_code == 200
    assert audit_rows("token_reuse_detected") == []


def test_the_refresh_token_just_used_is_refused_without_revoking_within_grace(
    app, client, accounts, audit_rows
):
    accounts.signup("alice")
    first = login(client)
    second = refresh(client, first["refresh_token"]).get_json()
    pass_the_grace_period(app, first, seconds_past=-2)  # 2 seconds of grace left

    retry = refresh(client, first["refresh_token"])

    assert retry.status_code == 401
    assert "Nothing was revoked" in retry.get_json()["message"]
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 200
    assert refresh(client, second["refresh_token"]).status_code == 200
    assert audit_rows("token_reuse_detected") == []
    assert "sent again" in audit_rows("access_denied")[-1].detail


def test_the_refresh_token_just_used_revokes_the_login_after_grace(
    app, client, accounts, audit_rows
):
    accounts.signup("alice")
    first = login(client)
    second = refresh(client, first["refresh_token"]).get_json()
    pass_the_grace_period(app, first, seconds_past=1)

    replay = refresh(client, first["refresh_token"])

    assert replay.status_code == 401
    assert "already used" in replay.get_json()["message"]
    assert client.get("/me", headers=bearer(second["access_token"])).status_code == 401
    assert len(audit_rows("token_reuse_detected")) == 1


def test_an_older_refresh_token_revokes_the_login_even_within_grace(client, accounts):
    """Only the token used last has a grace period: one from two refreshes ago is a replay."""
    accounts.signup("alice")
    first = login(client)
    second = refresh(client, first["refresh_token"]).get_json()
    third = refresh(client, second["refresh_token"]).get_json()

    replay = refresh(client, first["refresh_token"])

    assert replay.status_code == 401
    assert "already used" in replay.get_json()["message"]
    assert client.get("/me", headers=bearer(third["access_token"])).status_code == 401


def test_no_refresh_extends_a_login_past_the_session_limit(app, client, accounts):
    accounts.signup("alice")
    tokens = login(client)
    family = claims(tokens["access_token"])["fam"]
    session = app.config["JWT_SESSION_MAX"]
    with app.app_context():  # the login began 29 days and 23 hours ago
        began = utcnow() - session + timedelta(hours=1)
        db.session.execute(
            update(TokenFamily).where(TokenFamily.id == family).values(created_at=began)
        )
        db.session.commit()

    renewed = refresh(client, tokens["refresh_token"]).get_json()

    session_end = (began + session).timestamp()
    for token in (renewed["access_token"], renewed["refresh_token"]):
        assert claims(token)["exp"] <= session_end
    assert renewed["refresh_expires_in"] <= 3600
    assert renewed["expires_in"] <= 15 * 60
    with app.app_context():
        assert db.session.get(TokenFamily, family).expires_at.timestamp() <= session_end + 1


def test_a_refresh_token_past_the_session_limit_is_expired(app, client, accounts):
    accounts.signup("alice")
    tokens = login(client)
    family = claims(tokens["access_token"])["fam"]
    with app.app_context():  # the login began 30 days and 1 second ago, refreshed ever since
        began = utcnow() - app.config["JWT_SESSION_MAX"] - timedelta(seconds=1)
        db.session.execute(
            update(TokenFamily).where(TokenFamily.id == family).values(created_at=began)
        )
        db.session.commit()
    last = refresh(client, tokens["refresh_token"]).get_json()

    assert last["refresh_expires_in"] <= 0
    response = refresh(client, last["refresh_token"])
    assert response.status_code == 401
    assert "expired" in response.get_json()["message"]


def test_logout_all_revokes_every_login_of_the_caller_only(client, accounts, audit_rows):
    alice = accounts.signup("alice")
    accounts.signup("bob")
    phone, laptop, bobs = login(client), login(client), login(client, "bob")

    response = client.post("/logout/all", headers=bearer(phone["access_token"]))

    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    for tokens in (phone, laptop):
        assert client.get("/me", headers=bearer(tokens["access_token"])).status_code == 401
        assert refresh(client, tokens["refresh_token"]).status_code == 401
    assert client.get("/me", headers=bearer(bobs["access_token"])).status_code == 200
    [row] = audit_rows("logout_all")
    assert row.user_id == alice["id"]
    assert row.detail.endswith("revoked: 2")


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


def signed(payload: dict) -> str:
    """A token signed with the server's key, as only a holder of the key could make."""
    return pyjwt.encode(payload, TEST_SETTINGS["JWT_SECRET_KEY"], algorithm="HS256")


def without(token: str, claim: str) -> str:
    payload = claims(token)
    del payload[claim]
    return signed(payload)


REQUIRED_CLAIMS = ["exp", "iat", "nbf", "jti", "type", "sub", "fam"]


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_an_access_token_missing_a_required_claim_is_invalid(client, accounts, claim):
    accounts.signup("alice")
    token = without(login(client)["access_token"], claim)

    response = client.get("/me", headers=bearer(token))

    assert response.status_code == 401
    assert response.get_json()["message"] == "Invalid token."


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_a_refresh_token_missing_a_required_claim_is_invalid(client, accounts, claim):
    accounts.signup("alice")
    token = without(login(client)["refresh_token"], claim)

    response = refresh(client, token)

    assert response.status_code == 401
    assert response.get_json()["message"] == "Invalid token."


@pytest.mark.parametrize(
    ("claim", "value"),
    [("type", "admin"), ("type", None), ("jti", 7), ("fam", ["x"]), ("sub", 1), ("exp", "soon")],
)
def test_a_token_with_a_claim_of_the_wrong_kind_is_invalid(client, accounts, claim, value):
    accounts.signup("alice")
    payload = claims(login(client)["access_token"])
    payload[claim] = value

    response = client.get("/me", headers=bearer(signed(payload)))

    assert response.status_code == 401
    assert response.get_json()["message"] == "Invalid token."


def test_a_refresh_token_relabelled_as_access_is_refused_where_it_is_current(client, accounts):
    """Changing `type` needs the key; with it, the token is still checked as what it says."""
    accounts.signup("alice")
    payload = claims(login(client)["refresh_token"])
    del payload["type"]

    assert client.get("/notes", headers=bearer(signed(payload))).status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"fam": "00000000-0000-0000-0000-000000000000"}, id="family-never-existed"),
        pytest.param({"sub": "999999"}, id="family-of-another-user"),
    ],
)
def test_a_token_of_no_login_of_its_user_is_invalid_not_revoked(client, accounts, change):
    accounts.signup("alice")
    payload = {**claims(login(client)["access_token"]), **change}

    response = client.get("/me", headers=bearer(signed(payload)))

    assert response.status_code == 401
    assert response.get_json()["message"] == "Invalid token."


def test_a_revoked_token_is_called_revoked(client, accounts):
    accounts.signup("alice")
    token = login(client)["access_token"]
    client.post("/logout", headers=bearer(token))

    response = client.get("/me", headers=bearer(token))

    assert response.get_json()["message"] == "Token has been revoked; log in again."


@pytest.mark.parametrize(
    "credentials",
    ["bearer {t}", "BEARER {t}", "bEaReR {t}", "Bearer  {t}", "bearer   {t}", " Bearer {t} "],
)
def test_the_bearer_scheme_is_case_insensitive_and_takes_one_or_more_spaces(
    client, accounts, credentials
):
    accounts.signup("alice")
    token = login(client)["access_token"]

    response = client.get("/me", headers={"Authorization": credentials.format(t=token)})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "credentials", ["Bearer", "Bearer{t}", "Basic {t}", "Token {t}", "Bearer {t} {t}", "{t}"]
)
def test_other_authorization_headers_are_no_bearer_token(client, accounts, credentials):
    accounts.signup("alice")
    token = login(client)["access_token"]

    response = client.get("/me", headers={"Authorization": credentials.format(t=token)})

    assert response.status_code == 401
