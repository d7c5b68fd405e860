"""`flask users list`, `demote-admin`, `deactivate`, `activate` and `set-password`: the admin
routes' rules from the command line, each audited as via CLI, naming users by id only."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from devlab.extensions import db
from devlab.models import PasswordResetToken, User, utcnow
from tests.conftest import PASSWORD
from tests.locks import holding_lock, wait_for_lock_waiters

NEW_PASSWORD = "a brand new passphrase"
# command -> (audit action, field, value it sets, what the output says after a change)
CHANGES = {
    "promote-admin": ("user_promoted", "is_admin", True, "is now an admin"),
    "demote-admin": ("user_demoted", "is_admin", False, "is no longer an admin"),
    "deactivate": ("user_deactivated", "is_active", False, "is now inactive"),
    "activate": ("user_activated", "is_active", True, "is active again"),
}
# What a user must be first for the command to change something.
BEFORE = {"promote-admin": {}, "demote-admin": {"is_admin": True}, "deactivate": {}}
BEFORE["activate"] = {"is_active": False}
REPEAT = {
    "promote-admin": "is already an admin",
    "demote-admin": "is already not an admin",
    "deactivate": "is already inactive",
    "activate": "is already active",
}
ALL_COMMANDS = [*CHANGES, "set-password"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def state(app, username: str) -> dict:
    with app.app_context():
        user = User.by_username(username)
        return {"id": user.id, "is_admin": user.is_admin, "is_active": user.is_active}


def set_state(app, username: str, **columns) -> None:
    with app.app_context():
        user = User.by_username(username)
        for column, value in columns.items():
            setattr(user, column, value)
        db.session.commit()


def invoke(runner, command: str, username: str, password: str = NEW_PASSWORD):
    if command == "set-password":
        return runner.invoke(args=[command, username, "--password-stdin"], input=password + "\n")
    return runner.invoke(args=[command, username])


# --- each change: done, audited by id, repeated --------------------------------------------------


@pytest.mark.parametrize("command", CHANGES)
def test_each_change_command_changes_the_user_and_audits_it_by_id(
    app, runner, accounts, audit_rows, command
):
    accounts.admin_headers("root")
    alice = accounts.signup("alice")
    set_state(app, "alice", **BEFORE[command])
    action, field, value, said = CHANGES[command]

    result = invoke(runner, command, "ALICE")

    assert result.exit_code == 0, result.output
    assert f"alice {said}" in result.output
    assert state(app, "alice")[field] is value
    row = audit_rows(action)[-1]
    assert row.detail == f"via CLI: {action.removeprefix('user_')} user {alice['id']}"
    assert (row.user_id, row.ip, row.method, row.path) == (None, None, None, None)
    assert (row.target_type, row.target_id) == ("user", str(alice["id"]))
    assert row.changes == {field: {"old": not value, "new": value}}


@pytest.mark.parametrize("command", CHANGES)
def test_a_repeated_change_says_already_and_is_audited_as_a_repeat(
    app, runner, accounts, audit_rows, command
):
    accounts.admin_headers("root")
    alice = accounts.signup("alice")
    set_state(app, "alice", **BEFORE[command])
    invoke(runner, command, "alice")

    result = invoke(runner, command, "alice")

    assert result.exit_code == 0, result.output
    assert f"alice {REPEAT[command]}" in result.output
    action = CHANGES[command][0]
    row = audit_rows(action)[-1]
    named = f"via CLI: {action.removeprefix('user_')} user {alice['id']}"
    assert row.detail == f"{named} (already {REPEAT[command].removeprefix('is already ')})"
    assert row.changes == {}


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_an_unknown_user_fails_clearly_and_writes_nothing(
    app, runner, accounts, audit_rows, command
):
    accounts.admin_headers("root")
    before = [row.id for row in audit_rows()]

    result = invoke(runner, command, "ghost")

    assert result.exit_code != 0
    assert "No user named 'ghost'" in result.output
    assert [row.id for row in audit_rows()] == before
    assert state(app, "root") == {"id": 1, "is_admin": True, "is_active": True}


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_a_non_ascii_name_is_nobody(runner, accounts, command):
    accounts.signup("kim")

    result = invoke(runner, command, "\u212aim")  # the Kelvin sign, which Python lowers to k

    assert result.exit_code != 0
    assert "No user named" in result.output


# --- the last-admin rules, shared with the routes ------------------------------------------------


@pytest.mark.parametrize("command", ["demote-admin", "deactivate"])
def test_the_last_active_admin_cannot_be_removed_from_the_cli(
    app, client, runner, accounts, audit_rows, command
):
    headers = accounts.admin_headers("root")
    accounts.admin_headers("dormant")
    set_state(app, "dormant", is_active=False)  # an inactive admin is no other admin
    before = [row.id for row in audit_rows()]

    result = invoke(runner, command, "root")

    assert result.exit_code == 1
    assert "root is the last active admin; make another admin first." in result.output
    assert state(app, "root") == {"id": 1, "is_admin": True, "is_active": True}
    assert [row.id for row in audit_rows()] == before
    assert client.get("/admin/users", headers=headers).status_code == 200


@pytest.mark.parametrize("command", ["demote-admin", "deactivate"])
def test_an_admin_may_be_removed_while_another_remains(app, runner, accounts, command):
    accounts.admin_headers("root")
    accounts.admin_headers("other")

    result = invoke(runner, command, "root")

    assert result.exit_code == 0, result.output
    assert state(app, "other") == {"id": 2, "is_admin": True, "is_active": True}


def test_the_cli_waits_for_the_admins_lock_and_then_sees_the_routes_change(
    app, client, runner, accounts
):
    """An admin's request and a command remove the two admins at once: one of them stays."""
    ann = accounts.admin_headers("ann")
    accounts.admin_headers("bob")
    ann_id = state(app, "ann")["id"]

    def demote_ann_over_http():
        return app.test_client().post(f"/admin/demote/{ann_id}", headers=ann).status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        with holding_lock(app, "SELECT id FROM users WHERE is_admin FOR UPDATE"):
            http = pool.submit(demote_ann_over_http)
            assert wait_for_lock_waiters(app, expected=1) == 1
            cli = pool.submit(invoke, runner, "demote-admin", "bob")
            assert wait_for_lock_waiters(app, expected=2) == 2
        statuses = (http.result(timeout=30), cli.result(timeout=30).exit_code)

    assert statuses == (200, 1)  # the command came second, and bob was the last admin left
    assert state(app, "bob")["is_admin"] is True
    assert state(app, "ann")["is_admin"] is False


# --- deactivate and activate do what the routes do ------------------------------------------------


def test_deactivate_revokes_every_token_and_activate_lets_the_user_log_in_anew(
    client, runner, accounts
):
    headers = accounts.headers("alice")

    invoke(runner, "deactivate", "alice")
    locked_out = client.post("/login", json={"username": "alice", "password": PASSWORD})
    invoke(runner, "activate", "alice")

    assert locked_out.status_code == 401
    assert client.get("/me", headers=headers).status_code == 401  # revoked for good
    assert client.get("/me", headers=bearer(accounts.token("alice"))).status_code == 200


def test_demote_admin_takes_admin_routes_away_from_tokens_already_issued(client, runner, accounts):
    accounts.admin_headers("root")
    headers = accounts.admin_headers("other")

    result = invoke(runner, "demote-admin", "other")

    assert result.exit_code == 0
    assert client.get("/admin/users", headers=headers).status_code == 403
    assert client.get("/me", headers=headers).status_code == 200


# --- set-password --------------------------------------------------------------------------------


def add_reset_link(app, username: str) -> None:
    with app.app_context():
        user = User.by_username(username)
        expires = utcnow() + timedelta(minutes=30)
        db.session.add(PasswordResetToken(user_id=user.id, token_hash="f" * 64, expires_at=expires))
        db.session.commit()


def reset_links(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(PasswordResetToken)).all())


def test_set_password_changes_it_and_ends_every_login_and_reset_link(
    app, client, runner, accounts, audit_rows
):
    alice = accounts.signup("alice")
    headers = bearer(accounts.token("alice"))
    other_login = bearer(accounts.token("alice"))
    add_reset_link(app, "alice")

    result = invoke(runner, "set-password", "Alice")

    assert result.exit_code == 0, result.output
    assert "Set the password of alice; logins ended: 2." in result.output
    assert NEW_PASSWORD not in result.output
    assert client.get("/me", headers=headers).status_code == 401
    assert client.get("/me", headers=other_login).status_code == 401
    assert reset_links(app) == 0
    old = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert old.status_code == 401
    new = client.post("/login", json={"username": "alice", "password": NEW_PASSWORD})
    assert new.status_code == 200
    [row] = audit_rows("password_changed")
    revoked = f"set the password of user {alice['id']}; token families revoked: 2"
    assert row.detail == f"via CLI: {revoked}"
    assert (row.user_id, row.ip) == (None, None)
    assert (row.target_type, row.target_id) == ("user", str(alice["id"]))
    assert row.changes == {"password": "changed"}


def test_set_password_prompts_twice_without_the_flag(client, runner, accounts):
    accounts.signup("alice")

    result = runner.invoke(
        args=["set-password", "alice"], input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
    )

    assert result.exit_code == 0, result.output
    assert NEW_PASSWORD not in result.output
    login = client.post("/login", json={"username": "alice", "password": NEW_PASSWORD})
    assert login.status_code == 200


def test_set_password_refuses_a_prompt_whose_confirmation_differs(client, runner, accounts):
    accounts.signup("alice")

    result = runner.invoke(
        args=["set-password", "alice"], input=f"{NEW_PASSWORD}\nsomething else\n"
    )

    assert result.exit_code != 0
    login = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "between 8 and 1024"), ("password123", "most common"), ("x" * 1025, "")],
    ids=["too-short", "too-common", "too-long"],
)
def test_set_password_applies_the_signup_rules_and_changes_nothing_otherwise(
    app, client, runner, accounts, audit_rows, password, message
):
    accounts.signup("alice")
    headers = bearer(accounts.token("alice"))
    add_reset_link(app, "alice")
    before = [row.id for row in audit_rows()]

    result = invoke(runner, "set-password", "alice", password)

    assert result.exit_code == 1
    assert "password:" in result.output
    assert message in result.output
    assert password not in result.output
    assert client.get("/me", headers=headers).status_code == 200
    assert reset_links(app) == 1
    assert [row.id for row in audit_rows()] == before
    login = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200


def test_a_login_that_upgrades_the_hash_keeps_the_reset_links(app, client, accounts, app_with):
    """A rehash with other costs is the same password, not a change."""
    accounts.signup("alice")
    add_reset_link(app, "alice")
    with app.app_context():
        hash_before = User.by_username("alice").hashed_password
    stronger = app_with(ARGON2_TIME_COST=2)

    login = stronger.test_client().post("/login", json={"username": "alice", "password": PASSWORD})

    assert login.status_code == 200
    with app.app_context():
        assert User.by_username("alice").hashed_password != hash_before
    assert reset_links(app) == 1


def test_a_password_change_over_http_ends_the_reset_links_too(app, client, accounts):
    headers = accounts.headers("alice")
    add_reset_link(app, "alice")

    response = client.post(
        "/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert response.status_code == 204
    assert reset_links(app) == 0


# --- users list ----------------------------------------------------------------------------------


@pytest.fixture
def team(app, accounts):
    accounts.admin_headers("root")
    accounts.signup("alice")
    accounts.admin_headers("dora")
    accounts.signup("eve")
    set_state(app, "dora", is_active=False)
    set_state(app, "eve", is_active=False)


def listed_names(output: str) -> list[str]:
    return [line.split()[1] for line in output.splitlines()[1:-1]]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ["root", "alice", "dora", "eve"]),
        (["--admins"], ["root", "dora"]),
        (["--inactive"], ["dora", "eve"]),
        (["--admins", "--inactive"], ["dora"]),
    ],
)
def test_users_list_shows_the_users_the_flags_leave(runner, team, audit_rows, flags, expected):
    result = runner.invoke(args=["users", "list", *flags])

    assert result.exit_code == 0, result.output
    assert listed_names(result.output) == expected
    assert result.output.splitlines()[-1] == f"{len(expected)} user{'s' * (len(expected) > 1)}."
    [row] = audit_rows("users_listed")
    assert row.detail == f"via CLI: listed {len(expected)} users"
    filters = {"--admins": {"is_admin": True}, "--inactive": {"is_active": False}}
    assert row.changes == {"filters": {k: v for f in flags for k, v in filters[f].items()}}


def test_users_list_shows_each_users_columns(runner, team):
    result = runner.invoke(args=["users", "list", "--admins", "--inactive"])

    header, dora, total = result.output.splitlines()
    assert header.split() == ["id", "username", "admin", "active", "created", "(UTC)", "email"]
    assert dora.split()[:4] == ["3", "dora", "yes", "no"]
    assert dora.endswith("  dora@example.com")
    assert total == "1 user."


def test_users_list_of_nobody_says_so(runner):
    result = runner.invoke(args=["users", "list", "--inactive"])

    assert result.exit_code == 0
    assert result.output.splitlines()[-1] == "0 users."
