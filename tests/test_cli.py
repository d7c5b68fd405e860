"""`flask promote-admin` and `flask create-admin`."""

import pytest
from sqlalchemy import select

from devlab.extensions import db
from devlab.models import User
from tests.conftest import PASSWORD


def test_promote_admin_gives_the_role_to_tokens_already_issued(client, runner, accounts):
    headers = accounts.headers("alice")
    assert client.get("/admin/users", headers=headers).status_code == 403

    result = runner.invoke(args=["promote-admin", "alice"])

    assert result.exit_code == 0
    assert "alice is now an admin" in result.output
    assert client.get("/admin/users", headers=headers).status_code == 200


def test_promote_admin_finds_the_user_in_any_case(runner, accounts):
    accounts.signup("Alice")

    result = runner.invoke(args=["promote-admin", "aLICE"])

    assert result.exit_code == 0
    assert "Alice is now an admin" in result.output


def test_promote_admin_of_an_unknown_user_fails_clearly(runner):
    result = runner.invoke(args=["promote-admin", "ghost"])

    assert result.exit_code != 0
    assert "No user named 'ghost'" in result.output


def test_promote_admin_twice_says_so_and_succeeds(runner, accounts):
    accounts.signup("alice")
    runner.invoke(args=["promote-admin", "alice"])

    result = runner.invoke(args=["promote-admin", "alice"])

    assert result.exit_code == 0
    assert "already an admin" in result.output


def test_promote_admin_is_audited_as_coming_from_the_cli(runner, accounts, audit_rows):
    user = accounts.signup("alice")

    runner.invoke(args=["promote-admin", "alice"])

    [row] = audit_rows("user_promoted")
    assert row.ip is None
    assert row.user_id is None
    assert row.detail == f"via CLI: promoted user {user['id']}"
    assert "alice" not in row.detail


def test_create_admin_reads_the_password_from_stdin(app, client, runner, audit_rows):
    result = runner.invoke(
        args=["create-admin", "root", "root@example.com", "--password-stdin"],
        input=PASSWORD + "\n",
    )

    assert result.exit_code == 0, result.output
    token = client.post("/login", json={"username": "root", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {token.get_json()['access_token']}"}
    me = client.get("/me", headers=headers).get_json()
    assert me["is_admin"] is True
    assert client.get("/audit/logs", headers=headers).status_code == 200
    [row] = audit_rows("admin_created")
    assert row.ip is None
    assert row.detail.startswith("via CLI")
    assert PASSWORD not in row.detail


def test_create_admin_prompts_twice_for_the_password(client, runner):
    result = runner.invoke(
        args=["create-admin", "root", "root@example.com"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )

    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    login = client.post("/login", json={"username": "root", "password": PASSWORD})
    assert login.status_code == 200


@pytest.mark.parametrize(
    ("username", "email", "message"),
    [
        ("ALICE", "new@example.com", "username is already taken"),
        ("newbie", "ALICE@example.com", "email address is already registered"),
    ],
)
def test_create_admin_refuses_a_duplicate(app, runner, accounts, username, email, message):
    accounts.signup("alice")

    result = runner.invoke(
        args=["create-admin", username, email, "--password-stdin"], input=PASSWORD
    )

    assert result.exit_code != 0
    assert message in result.output
    with app.app_context():
        assert db.session.scalars(select(User.username)).all() == ["alice"]


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["x", "x@example.com"], PASSWORD, "username"),
        (["root", "not-an-email"], PASSWORD, "email"),
        (["root", "root@example.com"], "short", "password"),
    ],
)
def test_create_admin_applies_the_signup_rules(app, runner, args, password, message):
    result = runner.invoke(args=["create-admin", *args, "--password-stdin"], input=password)

    assert result.exit_code != 0
    assert message in result.output
    with app.app_context():
        assert db.session.scalar(select(User)) is None
