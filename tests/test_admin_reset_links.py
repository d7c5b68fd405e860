"""Admins create accounts and send reset links; no admin ever knows another person's password."""

import pytest

from tests.conftest import PASSWORD
from tests.mailbox import reset_token

PUBLIC_BASE_URL = "https://devlab.example"
NEW_ACCOUNT = {"username": "carol", "email": "Carol@Example.com"}


@pytest.fixture
def mailing_client(app_with, smtp_server):
    """A client of an app that mails through a fresh SMTP server: (client, mailbox)."""
    server = smtp_server()
    app = app_with(SMTP_URL=server.url(), PUBLIC_BASE_URL=PUBLIC_BASE_URL)
    return app.test_client(), server.mailbox


def login(client, username: str, password: str):
    return client.post("/login", json={"username": username, "password": password})


def test_an_admin_creates_an_account_whose_owner_chooses_its_password(mailing_client, accounts):
    client, mailbox = mailing_client
    admin = accounts.admin_headers("root")

    created = client.post("/admin/users", json=NEW_ACCOUNT, headers=admin)

    assert created.status_code == 201
    body = created.get_json()
    assert (body["username"], body["email"], body["is_admin"]) == (
        "carol",
        "Carol@Example.com",
        False,
    )
    (mail,) = mailbox.wait_for(1)
    assert mail.recipients == ["Carol@Example.com"]
    assert mail.message["Subject"] == "Your DevLab account"
    assert 'the username "carol"' in mail.message.get_content()
    # No password logs in until the owner chooses one, not even an empty or a guessed one.
    assert login(client, "carol", "!unusable").status_code == 401
    token = reset_token(mail.message)
    chosen = {"token": token, "new_password": "carol's own passphrase"}
    assert client.post("/password/reset", json=chosen).status_code == 204
    assert login(client, "carol", "carol's own passphrase").status_code == 200


def test_an_admin_may_create_an_admin(client, accounts):
    admin = accounts.admin_headers("root")

    created = client.post("/admin/users", json=NEW_ACCOUNT | {"is_admin": True}, headers=admin)

    assert created.get_json()["is_admin"] is True


@pytest.mark.parametrize(
    "clash",
    [
        {"username": "ALICE", "email": "someone@example.com"},
        {"username": "someone", "email": "alice@EXAMPLE.com"},
    ],
)
def test_a_taken_username_or_email_answers_409_in_any_case(client, accounts, clash):
    admin = accounts.admin_headers("root")
    accounts.signup("alice")

    response = client.post("/admin/users", json=clash, headers=admin)

    assert response.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"username": "carol"},
        {"username": "a b", "email": "carol@example.com"},
        {**NEW_ACCOUNT, "password": PASSWORD},  # the owner chooses it, never the admin
    ],
)
def test_account_fields_follow_the_signup_rules_and_take_no_password(client, accounts, body):
    admin = accounts.admin_headers("root")

    assert client.post("/admin/users", json=body, headers=admin).status_code == 422


def test_only_admins_create_accounts_or_send_reset_links(client, accounts):
    user = accounts.headers("alice")

    created = client.post("/admin/users", json=NEW_ACCOUNT, headers=user)
    sent = client.post("/admin/users/1/password-reset", headers=user)

    assert (created.status_code, sent.status_code) == (403, 403)


def test_creating_an_account_is_audited_by_id_without_its_name_or_address(
    client, accounts, audit_rows
):
    admin = accounts.admin_headers("root")

    carol = client.post("/admin/users", json=NEW_ACCOUNT, headers=admin).get_json()

    (created,) = audit_rows("user_created")
    assert (created.user_id, created.target_type, created.target_id) == (
        1,
        "user",
        str(carol["id"]),
    )
    assert created.changes == {
        "username": "set",
        "email": "set",
        "is_admin": {"old": None, "new": False},
    }
    (sent,) = audit_rows("password_reset_requested")
    assert (sent.user_id, sent.target_id) == (1, str(carol["id"]))
    for row in (created, sent):
        assert "carol" not in f"{row.detail} {row.changes}".lower()


def test_with_password_reset_off_an_account_is_created_without_a_link(app_with, accounts, caplog):
    client = app_with(PASSWORD_RESET_ENABLED=False).test_client()
    admin = accounts.admin_headers("root")

    created = client.post("/admin/users", json=NEW_ACCOUNT, headers=admin)

    assert created.status_code == 201
    assert login(client, "carol", "!unusable").status_code == 401
    sent = client.post(f"/admin/users/{created.get_json()['id']}/password-reset", headers=admin)
    assert sent.status_code == 403


def test_an_admin_sends_a_user_a_reset_link(mailing_client, accounts, audit_rows):
    client, mailbox = mailing_client
    admin = accounts.admin_headers("root")
    alice = accounts.signup("alice")

    response = client.post(f"/admin/users/{alice['id']}/password-reset", headers=admin)

    assert response.status_code == 202
    assert response.get_json() == {
        "message": "A reset link is on its way to the account's email address."
    }
    (mail,) = mailbox.wait_for(1)
    assert mail.message["Subject"] == "Reset your DevLab password"
    assert login(client, "alice", PASSWORD).status_code == 200  # until the link is used
    token = reset_token(mail.message)
    chosen = {"token": token, "new_password": "alice chose anew"}
    assert client.post("/password/reset", json=chosen).status_code == 204
    assert login(client, "alice", "alice chose anew").status_code == 200
    (row,) = audit_rows("password_reset_requested")
    assert (row.user_id, row.target_type, row.target_id) == (1, "user", str(alice["id"]))


def test_a_reset_link_for_nobody_is_404_and_for_a_deactivated_account_409(client, accounts):
    admin = accounts.admin_headers("root")
    bob = accounts.signup("bob")
    client.post(f"/admin/users/{bob['id']}/deactivate", headers=admin)

    unknown = client.post("/admin/users/999/password-reset", headers=admin)
    deactivated = client.post(f"/admin/users/{bob['id']}/password-reset", headers=admin)

    assert (unknown.status_code, deactivated.status_code) == (404, 409)
