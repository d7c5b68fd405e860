"""A forgotten password, reset through a link mailed by a real SMTP server on loopback.

The session app has no SMTP_URL (development: mails are logged); the tests that read mail make
apps of their own that send to an aiosmtpd server (tests/mailbox.py).
"""

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import select, text, update

from bench.statements import counting_statements
from config import Config, ConfigError
from devlab import create_app
from devlab.audit.trail import pseudonym
from devlab.auth.reset_links import token_hash
from devlab.extensions import db
from devlab.mail import OUTBOX_KEY
from devlab.models import PasswordResetToken, User, utcnow
from tests.conftest import PASSWORD, TEST_REDIS_URL, TEST_SETTINGS, without_request_id
from tests.locks import holding_lock, wait_for_lock_waiters
from tests.mailbox import reset_token

NEW_PASSWORD = "a brand new passphrase"
PUBLIC_BASE_URL = "https://devlab.example"
UNUSABLE_LINK = (
    "This reset link is not valid: it is wrong, used, replaced by a newer one, or expired."
)


@pytest.fixture
def mailing(app_with, smtp_server):
    """An app that mails through a fresh SMTP server: (app, client, mailbox)."""

    def make(tls: str | None = None, **settings):
        server = smtp_server(tls=tls)
        app = app_with(
            SMTP_URL=server.url(),
            SMTP_CA_FILE=str(server.cert_file),
            PUBLIC_BASE_URL=PUBLIC_BASE_URL,
            **settings,
        )
        return app, app.test_client(), server.mailbox

    return make


def forgot(client, email: str = "alice@example.com", **kwargs):
    return client.post("/password/forgot", json={"email": email}, **kwargs)


def reset(client, token: str, password: str = NEW_PASSWORD, **kwargs):
    return client.post("/password/reset", json={"token": token, "new_password": password}, **kwargs)


def login(client, password: str, username: str = "alice"):
    return client.post("/login", json={"username": username, "password": password})


def failures_counted() -> float:
    return REGISTRY.get_sample_value("devlab_mail_failures_total") or 0.0


def wait_until_sent(app) -> None:
    app.extensions[OUTBOX_KEY].wait_until_sent()


# --- the round trip ---------------------------------------------------------------------


def test_a_forgotten_password_is_reset_through_the_link_in_the_mail(mailing, accounts):
    _app, client, mailbox = mailing()
    accounts.signup("alice")

    asked = forgot(client, "Alice@Example.com")

    assert asked.status_code == 202
    (mail,) = mailbox.wait_for(1)
    assert mail.recipients == ["alice@example.com"]
    assert mail.message["To"] == "alice@example.com"
    assert mail.message["From"] == "DevLab <noreply@devlab.example>"
    assert mail.message["Subject"] == "Reset your DevLab password"
    text_of_mail = mail.message.get_content()
    assert f"{PUBLIC_BASE_URL}/reset-password#token=" in text_of_mail
    assert "within 30 minutes" in text_of_mail
    token = reset_token(mail.message)
    assert len(token) == 43  # 32 random bytes, URL-safe base64

    assert reset(client, token).status_code == 204
    assert login(client, NEW_PASSWORD).status_code == 200
    assert login(client, PASSWORD).status_code == 401


def test_only_the_tokens_hash_is_stored(mailing, accounts):
    app, client, mailbox = mailing()
    accounts.signup("alice")
    forgot(client)
    token = reset_token(mailbox.wait_for(1)[0].message)

    with app.app_context():
        stored = db.session.scalars(select(PasswordResetToken.token_hash)).all()

    assert stored == [token_hash(token)]
    assert token not in stored[0]


def test_the_link_works_once(mailing, accounts):
    _app, client, mailbox = mailing()
    accounts.signup("alice")
    forgot(client)
    token = reset_token(mailbox.wait_for(1)[0].message)
    assert reset(client, token).status_code == 204

    again = reset(client, token, "yet another passphrase")

    assert again.status_code == 400
    assert login(client, NEW_PASSWORD).status_code == 200


def test_a_link_past_password_reset_minutes_is_refused(mailing, accounts):
    app, client, mailbox = mailing(PASSWORD_RESET_MINUTES=1)
    accounts.signup("alice")
    forgot(client)
    token = reset_token(mailbox.wait_for(1)[0].message)
    with app.app_context():  # a minute and a second later
        row = db.session.scalars(select(PasswordResetToken)).one()
        assert row.expires_at - row.created_at == timedelta(minutes=1)
        db.session.execute(
            update(PasswordResetToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()

    response = reset(client, token)

    assert response.status_code == 400
    assert login(client, PASSWORD).status_code == 200


def test_a_newer_link_ends_the_older_one(mailing, accounts):
    _app, client, mailbox = mailing()
    accounts.signup("alice")
    forgot(client)
    forgot(client)
    older, newer = (reset_token(mail.message) for mail in mailbox.wait_for(2))

    assert reset(client, older).status_code == 400
    assert reset(client, newer).status_code == 204


def test_a_password_change_ends_the_link(mailing, accounts):
    _app, client, mailbox = mailing()
    headers = accounts.headers("alice")
    forgot(client)
    token = reset_token(mailbox.wait_for(1)[0].message)
    change = {"current_password": PASSWORD, "new_password": "changed it myself"}
    assert client.post("/me/password", json=change, headers=headers).status_code == 204

    assert reset(client, token).status_code == 400
    assert login(client, "changed it myself").status_code == 200


def test_a_password_set_outside_the_api_ends_the_link_too(mailing, accounts):
    """A command (an operator's `flask set-password`) sets passwords through User.set_password,
    as the routes do."""
    app, client, mailbox = mailing()
    alice = accounts.signup("alice")
    forgot(client)
    token = reset_token(mailbox.wait_for(1)[0].message)
    with app.app_context():
        db.session.get(User, alice["id"]).set_password("set by an operator")
        db.session.commit()

    assert reset(client, token).status_code == 400
    assert login(client, "set by an operator").status_code == 200


def test_a_login_that_rehashes_the_password_leaves_the_link_alone(mailing, accounts):
    """Moving a password to the configured argon2 costs at login is no change of password."""
    app, client, mailbox = mailing(ARGON2_TIME_COST=2)  # other costs than the signup's
    alice = accounts.signup("alice")
    forgot(client)
    token = reset_token(mailbox.wait_for(1)[0].message)

    assert login(client, PASSWORD).status_code == 200
    with app.app_context():
        assert ",t=2," in db.session.get(User, alice["id"]).hashed_password  # rehashed

    assert reset(client, token).status_code == 204


def test_a_reset_ends_every_login_of_the_account(mailing, accounts):
    _app, client, mailbox = mailing()
    accounts.signup("alice")
    tokens = login(client, PASSWORD).get_json()
    forgot(client)
    assert reset(client, reset_token(mailbox.wait_for(1)[0].message)).status_code == 204

    me = client.get("/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    refreshed = client.post(
        "/token/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )

    assert (me.status_code, refreshed.status_code) == (401, 401)


@pytest.mark.parametrize("changes", [["deactivate"], ["deactivate", "activate"]])
def test_a_link_of_an_account_deactivated_since_is_refused_even_once_it_is_active_again(
    mailing, accounts, client, changes
):
    _app, mailing_client, mailbox = mailing()
    admin = accounts.admin_headers("root")
    alice = accounts.signup("alice")
    forgot(mailing_client)
    token = reset_token(mailbox.wait_for(1)[0].message)
    for change in changes:
        client.post(f"/admin/users/{alice['id']}/{change}", headers=admin)

    assert reset(mailing_client, token).status_code == 400
    assert login(mailing_client, PASSWORD).status_code == (200 if "activate" in changes else 401)


def test_the_new_password_follows_the_signup_rules(client, accounts, caplog):
    accounts.signup("alice")

    response = reset(client, "x" * 43, "password")

    assert response.status_code == 422
    assert "new_password" in response.get_json()["errors"]["json"]


# --- one answer for every wrong link ----------------------------------------------------


def test_wrong_used_and_expired_links_get_one_and_the_same_400(mailing, accounts):
    app, client, mailbox = mailing()
    accounts.signup("alice")
    forgot(client)
    used = reset_token(mailbox.wait_for(1)[0].message)
    reset(client, used)
    forgot(client)
    expired = reset_token(mailbox.wait_for(2)[1].message)
    with app.app_context():
        db.session.execute(update(PasswordResetToken).values(expires_at=utcnow()))
        db.session.commit()

    answers = [reset(client, token) for token in ("not-a-token", used[::-1], used, expired)]

    assert {answer.status_code for answer in answers} == {400}
    bodies = [without_request_id(answer) for answer in answers]
    assert bodies == [{"code": 400, "status": "Bad Request", "message": UNUSABLE_LINK}] * 4


def test_two_resets_with_one_link_at_once_make_exactly_one_change(mailing, accounts):
    app, client, mailbox = mailing()
    accounts.signup("alice")
    forgot(client)
    token = reset_token(mailbox.wait_for(1)[0].message)
    passwords = ["first of two passwords", "second of two passwords"]

    with ThreadPoolExecutor(2) as pool:
        with holding_lock(
            app,
            "SELECT 1 FROM password_reset_tokens WHERE token_hash = :hash FOR UPDATE",
            hash=token_hash(token),
        ):
            answers = [pool.submit(reset, app.test_client(), token, p) for p in passwords]
            assert wait_for_lock_waiters(app, 2) == 2
        statuses = [answer.result().status_code for answer in answers]

    assert sorted(statuses) == [204, 400]
    winner = passwords[statuses.index(204)]
    assert login(client, winner).status_code == 200


# --- no enumeration -------------------------------------------------------------------------


def test_forgot_answers_alike_for_an_account_a_deactivated_one_and_nobody(
    mailing, accounts, client
):
    _app, mailing_client, mailbox = mailing()
    admin = accounts.admin_headers("root")
    accounts.signup("alice")
    bob = accounts.signup("bob")
    client.post(f"/admin/users/{bob['id']}/deactivate", headers=admin)

    answers = [
        forgot(mailing_client, email)
        for email in ("alice@example.com", "bob@example.com", "nobody@example.com")
    ]

    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.get_data() for answer in answers}) == 1
    headers = [
        sorted((k, v) for k, v in answer.headers.items() if k != "X-Request-ID")
        for answer in answers
    ]
    assert headers[0] == headers[1] == headers[2]
    assert answers[0].get_json() == {
        "message": "If an active account has this email address, a link to reset its password "
        "is on its way."
    }
    (mail,) = mailbox.wait_for(1)
    assert mail.recipients == ["alice@example.com"]
    assert mailbox.stays_at(1)


def test_forgot_sends_the_same_statements_whether_or_not_an_account_has_the_address(
    app, client, accounts
):
    accounts.signup("alice")
    forgot(client, "warm-up@example.com")
    with app.app_context():
        engine = db.engine

    sent = {}
    for email in ("alice@example.com", "nobody@example.com"):
        with counting_statements(engine) as statements:
            assert forgot(client, email).status_code == 202
        sent[email] = statements

    assert sent["alice@example.com"] == sent["nobody@example.com"]
    assert len(sent["nobody@example.com"]) == 4  # the account, two for its links, the audit row


# --- the mail server ----------------------------------------------------------------------


def test_an_smtp_server_that_is_down_still_gets_a_202_and_the_failure_logged_and_counted(
    app_with, accounts, caplog
):
    app = app_with(SMTP_URL="smtp://127.0.0.1:1", PUBLIC_BASE_URL=PUBLIC_BASE_URL)
    client = app.test_client()
    alice = accounts.signup("alice")
    before = failures_counted()

    response = forgot(client)
    wait_until_sent(app)

    assert response.status_code == 202
    assert failures_counted() == before + 1
    logged = [r.getMessage() for r in caplog.records if r.name == "devlab.mail"]
    assert logged == [
        f"Could not send the password reset link of user {alice['id']}: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    ]
    everything_logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "token=" not in everything_logged
    assert PUBLIC_BASE_URL not in everything_logged


def test_credentials_are_never_sent_to_a_server_without_starttls(
    app_with, smtp_server, accounts, caplog
):
    server = smtp_server(auth=True, auth_in_clear=True)  # would take a password in clear
    app = app_with(SMTP_URL=server.url("mailer:mail-password"), PUBLIC_BASE_URL=PUBLIC_BASE_URL)
    accounts.signup("alice")
    before = failures_counted()

    assert forgot(app.test_client()).status_code == 202
    wait_until_sent(app)

    assert server.mailbox.logins == []
    assert server.mailbox.messages == []
    assert failures_counted() == before + 1
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "devlab.mail"]
    assert "offers no STARTTLS" in logged


def test_a_refused_login_is_logged_by_its_code_without_the_password(
    app_with, smtp_server, accounts, caplog
):
    server = smtp_server(tls="starttls", auth=True)
    app = app_with(
        SMTP_URL=server.url("mailer:not-the-mail-password"),
        SMTP_CA_FILE=str(server.cert_file),
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
    )
    alice = accounts.signup("alice")
    before = failures_counted()

    assert forgot(app.test_client()).status_code == 202
    wait_until_sent(app)

    assert server.mailbox.messages == []
    assert failures_counted() == before + 1
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "devlab.mail"]
    assert logged == (
        f"Could not send the password reset link of user {alice['id']}: "
        "SMTPAuthenticationError (SMTP 535)"
    )


def test_starttls_carries_the_login_and_the_mail(app_with, smtp_server, accounts):
    server = smtp_server(tls="starttls", auth=True)
    app = app_with(
        SMTP_URL=server.url("mailer:mail-password"),
        SMTP_CA_FILE=str(server.cert_file),
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
    )
    accounts.signup("alice")

    assert forgot(app.test_client()).status_code == 202

    (mail,) = server.mailbox.wait_for(1)
    assert (mail.over_tls, mail.authenticated) == (True, True)
    assert server.mailbox.logins == [("mailer", "mail-password")]


def test_a_server_without_credentials_gets_starttls_when_it_offers_it(mailing, accounts):
    _app, client, mailbox = mailing(tls="starttls")
    accounts.signup("alice")

    forgot(client)

    (mail,) = mailbox.wait_for(1)
    assert (mail.over_tls, mail.authenticated) == (True, False)


def test_smtps_is_tls_from_the_start(mailing, accounts):
    _app, client, mailbox = mailing(tls="smtps")
    accounts.signup("alice")

    forgot(client)

    (mail,) = mailbox.wait_for(1)
    assert mail.over_tls
    assert reset_token(mail.message)


def test_an_untrusted_certificate_stops_the_mail(app_with, smtp_server, accounts, caplog):
    server = smtp_server(tls="starttls")
    app = app_with(SMTP_URL=server.url(), PUBLIC_BASE_URL=PUBLIC_BASE_URL)  # no SMTP_CA_FILE
    accounts.signup("alice")
    before = failures_counted()

    forgot(app.test_client())
    wait_until_sent(app)

    assert server.mailbox.messages == []
    assert failures_counted() == before + 1
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "devlab.mail"]
    assert "certificate verify failed" in logged


def test_without_smtp_url_development_logs_the_mail_and_says_so(app, client, accounts, caplog):
    caplog.set_level("INFO")
    accounts.signup("alice")

    forgot(client)
    wait_until_sent(app)

    (logged,) = [r.getMessage() for r in caplog.records if r.name == "devlab.mail"]
    assert logged.startswith("SMTP_URL is not set: this mail was NOT sent")
    token = logged.partition("#token=")[2].split()[0]
    assert reset(client, token).status_code == 204


def test_a_failed_request_sends_no_mail(mailing, accounts):
    """The mail goes only once the request's change and audit row are committed."""
    app, client, mailbox = mailing()
    accounts.signup("alice")
    with app.app_context():
        engine = db.engine
    with engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE"))
        response = forgot(client)
        blocker.rollback()

    assert response.status_code == 503
    assert mailbox.stays_at(0)


# --- settings -----------------------------------------------------------------------------


PRODUCTION = TEST_SETTINGS | {
    "DEVLAB_ENV": "production",
    "JWT_SECRET_KEY": "k3Vq9-random-and-long-enough-for-production-use",
    "ARGON2_TIME_COST": 2,
    "ARGON2_MEMORY_KIB": 19456,
}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"PUBLIC_BASE_URL": PUBLIC_BASE_URL}, "SMTP_URL"),
        ({"SMTP_URL": "smtps://mail.example.com"}, "PUBLIC_BASE_URL"),
    ],
)
def test_production_refuses_to_start_without_a_mail_server_and_public_address(settings, named):
    with pytest.raises(ConfigError, match=f"{named} must be set"):
        create_app(PRODUCTION | settings)


def test_production_starts_without_them_when_password_reset_is_off():
    app = create_app(PRODUCTION | {"PASSWORD_RESET_ENABLED": False})

    assert app.config["SMTP"] is None


@pytest.mark.parametrize(
    "url",
    [
        "mailto:alice@example.com",
        "smtp://host:99999",
        "smtp://host:notaport",
        "smtp://host/path",
        "http://host",
        "smtp://:secret-password@host",
    ],
)
def test_an_unusable_smtp_url_is_refused_without_repeating_it(url):
    with pytest.raises(ConfigError, match="SMTP_URL must be") as refused:
        create_app(TEST_SETTINGS | {"SMTP_URL": url})

    assert url not in str(refused.value)


def test_smtp_url_credentials_are_url_decoded_and_ports_have_defaults():
    app = create_app(TEST_SETTINGS | {"SMTP_URL": "smtps://me%40example.com:p%3Ass@mail.example"})

    server = app.config["SMTP"]
    assert (server.scheme, server.host, server.port) == ("smtps", "mail.example", 465)
    assert (server.username, server.password) == ("me@example.com", "p:ss")
    assert "p:ss" not in repr(server)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("PUBLIC_BASE_URL", "ftp://example.com"),
        ("PUBLIC_BASE_URL", "https://example.com/?next=x"),
        ("MAIL_FROM", "not an address"),
        ("MAIL_FROM", "DevLab <a@example.com>\r\nBcc: all@example.com"),
    ],
)
def test_an_unusable_link_base_or_sender_is_refused(setting, value):
    with pytest.raises(ConfigError, match=setting):
        create_app(TEST_SETTINGS | {setting: value})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/password/forgot", {"email": "alice@example.com"}),
        ("/password/reset", {"token": "x" * 43, "new_password": NEW_PASSWORD}),
    ],
)
def test_with_password_reset_off_the_routes_answer_403_and_say_why(app_with, accounts, path, body):
    client = app_with(PASSWORD_RESET_ENABLED=False).test_client()
    accounts.signup("alice")

    response = client.post(path, json=body)

    assert response.status_code == 403
    assert "PASSWORD_RESET_ENABLED=0" in response.get_json()["message"]


# --- rate limits --------------------------------------------------------------------------


def test_forgot_is_limited_per_client_address(app_with, accounts):
    client = app_with(RATELIMIT_ENABLED=True, RATELIMIT_PASSWORD_RESET="2 per hour").test_client()

    answers = [forgot(client, f"user{n}@example.com").status_code for n in range(3)]
    elsewhere = forgot(client, "user9@example.com", environ_base={"REMOTE_ADDR": "203.0.113.5"})

    assert answers == [202, 202, 429]
    assert elsewhere.status_code == 202


def test_forgot_is_limited_per_email_address_alike_for_accounts_and_nobody(
    app_with, accounts, audit_rows
):
    limited = app_with(RATELIMIT_ENABLED=True, RATELIMIT_PASSWORD_RESET="2 per hour")
    client = limited.test_client()
    accounts.signup("alice")

    def from_addresses(email: str, first_octet: int) -> list:
        return [
            forgot(client, email, environ_base={"REMOTE_ADDR": f"203.0.{first_octet}.{n}"})
            for n in range(3)
        ]

    known = from_addresses("Alice@example.com", 1)
    unknown = from_addresses("Nobody@example.com", 2)

    assert [a.status_code for a in known] == [a.status_code for a in unknown] == [202, 202, 429]
    assert without_request_id(known[2]) == without_request_id(unknown[2])
    assert without_request_id(known[2])["message"].startswith(
        "Too many reset links asked for this email address"
    )
    assert int(known[2].headers["Retry-After"]) > 3000
    details = [row.detail for row in audit_rows("rate_limited")]
    with limited.app_context():
        assert details == [
            f"password-forgot-email limit (2 per 1 hour) for address {pseudonym(email)}"
            for email in ("alice@example.com", "nobody@example.com")
        ]


def test_resets_are_limited_per_client_address(app_with):
    client = app_with(RATELIMIT_ENABLED=True, RATELIMIT_PASSWORD_RESET="2 per hour").test_client()

    answers = [reset(client, f"guess-{n}").status_code for n in range(3)]

    assert answers == [400, 400, 429]


def test_the_per_email_count_lives_in_redis_under_a_pseudonym(app_with):
    store = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    prefix = f"devlab-test-{uuid.uuid4().hex}"
    limited = app_with(
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI=TEST_REDIS_URL,
        RATELIMIT_STORAGE_OPTIONS=Config.RATELIMIT_STORAGE_OPTIONS | {"key_prefix": prefix},
    )
    try:
        forgot(limited.test_client(), "Secret.Person@example.com")
        keys = set(store.scan_iter(match=f"{prefix}:*"))
    finally:
        for key in store.scan_iter(match=f"{prefix}:*"):
            store.delete(key)
        store.close()

    with limited.app_context():
        hidden = pseudonym("secret.person@example.com")
    assert f"{prefix}:password-forgot-email/5/3600/{hidden}" in keys
    assert not any("secret" in key.lower() for key in keys)


# --- the audit trail ----------------------------------------------------------------------


def test_the_trail_names_accounts_by_id_and_unknown_addresses_by_pseudonym(
    app, client, accounts, audit_rows
):
    alice = accounts.signup("alice")

    forgot(client, "alice@example.com")
    forgot(client, "Nobody@Example.com")

    known, unknown = audit_rows("password_reset_requested")
    assert (known.target_type, known.target_id, known.user_id) == ("user", str(alice["id"]), None)
    assert known.detail == f"reset link sent to user {alice['id']}"
    assert (unknown.target_type, unknown.target_id) == (None, None)
    with app.app_context():
        assert unknown.detail == (
            f"no account has this address ({pseudonym('nobody@example.com')}): nothing sent"
        )
    for row in (known, unknown):
        assert "example.com" not in f"{row.detail} {row.changes}"


def test_a_reset_and_a_failed_one_are_audited(app, client, accounts, audit_rows, caplog):
    caplog.set_level("INFO")
    alice = accounts.signup("alice")
    forgot(client)
    wait_until_sent(app)
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "devlab.mail"]
    token = logged.partition("#token=")[2].split()[0]

    reset(client, token)
    reset(client, token)

    (done,) = audit_rows("password_reset")
    assert (done.user_id, done.target_type, done.target_id) == (
        alice["id"],
        "user",
        str(alice["id"]),
    )
    assert done.changes == {"password": "changed"}
    assert "alice" not in done.detail
    (failed,) = audit_rows("password_reset_failed")
    assert (failed.status_code, failed.detail) == (400, "unknown, used or superseded reset link")


# --- housekeeping -------------------------------------------------------------------------


def test_prune_revocations_deletes_expired_reset_links_and_keeps_live_ones(
    app, client, accounts, runner
):
    accounts.signup("alice")
    accounts.signup("bob")
    forgot(client, "alice@example.com")
    forgot(client, "bob@example.com")
    with app.app_context():
        db.session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.user_id == 1)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()

    result = runner.invoke(args=["prune-revocations"])

    assert result.exit_code == 0, result.output
    assert "Pruned 1 expired password reset link." in result.output
    with app.app_context():
        assert db.session.scalars(select(PasswordResetToken.user_id)).all() == [2]


# --- the OpenAPI document -------------------------------------------------------------------


def test_the_reset_routes_are_documented_with_their_answers(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    assert set(paths["/password/forgot"]["post"]["responses"]) >= {
        "202",
        "403",
        "413",
        "422",
        "429",
        "503",
    }
    assert set(paths["/password/reset"]["post"]["responses"]) >= {
        "204",
        "400",
        "403",
        "413",
        "422",
        "429",
        "503",
    }
    assert UNUSABLE_LINK in paths["/password/reset"]["post"]["responses"]["400"]["description"]


def test_a_slow_mail_server_does_not_hold_the_answer_up(app_with, accounts, smtp_server):
    """The answer does not wait for SMTP: a server that takes its time delays only the mail."""
    server = smtp_server()
    release = threading.Event()
    original = server.mailbox.handle_DATA

    async def slow(*args):
        while not release.is_set():
            await asyncio.sleep(0.05)
        return await original(*args)

    server.mailbox.handle_DATA = slow
    app = app_with(SMTP_URL=server.url(), PUBLIC_BASE_URL=PUBLIC_BASE_URL)
    accounts.signup("alice")

    started = time.perf_counter()
    response = forgot(app.test_client())
    took = time.perf_counter() - started
    release.set()

    assert response.status_code == 202
    assert took < 1
    assert server.mailbox.wait_for(1)


# --- links against concurrent changes, deactivation, production mail -----------------------


def test_a_link_asked_for_an_address_just_replaced_is_not_sent(mailing, accounts):
    """The account is locked before its link is made: an address change that committed
    meanwhile is seen, and the old address gets nothing (here the change came first)."""
    app, client, mailbox = mailing()
    accounts.signup("alice")
    headers = {"Authorization": f"Bearer {accounts.token('alice')}"}
    changed = client.patch(
        "/me", json={"email": "alice@new.example", "current_password": PASSWORD}, headers=headers
    )
    assert changed.status_code == 200

    assert forgot(client, "alice@example.com").status_code == 202
    wait_until_sent(app)

    assert mailbox.messages == []
    with app.app_context():
        assert db.session.scalar(select(PasswordResetToken)) is None


def test_an_address_change_waited_for_ends_the_link_a_request_was_making(mailing, accounts):
    """A reset request that waits behind an address change finds the row no longer matching."""
    app, _client, mailbox = mailing()
    alice = accounts.signup("alice")
    with ThreadPoolExecutor(1) as pool:
        with holding_lock(
            app, "SELECT 1 FROM users WHERE id = :id FOR UPDATE", id=alice["id"]
        ) as held:
            asked = pool.submit(forgot, app.test_client(), "alice@example.com")
            assert wait_for_lock_waiters(app, 1) == 1
            held.execute(
                text("UPDATE users SET email = 'alice@new.example' WHERE id = :id"),
                {"id": alice["id"]},
            )
        assert asked.result().status_code == 202
    wait_until_sent(app)

    assert mailbox.messages == []


def test_two_requests_at_once_leave_one_link(mailing, accounts):
    app, _client, mailbox = mailing()
    alice = accounts.signup("alice")
    with ThreadPoolExecutor(2) as pool:
        with holding_lock(app, "SELECT 1 FROM users WHERE id = :id FOR UPDATE", id=alice["id"]):
            asked = [pool.submit(forgot, app.test_client()) for _ in range(2)]
            assert wait_for_lock_waiters(app, 2) == 2
        assert [answer.result().status_code for answer in asked] == [202, 202]
    wait_until_sent(app)

    with app.app_context():
        links = db.session.scalars(select(PasswordResetToken)).all()
    assert len(links) == 1
    sent = [reset_token(received.message) for received in mailbox.wait_for(2)]
    usable = [token for token in sent if token_hash(token) == links[0].token_hash]
    assert len(usable) == 1


def test_a_mail_that_cannot_be_composed_is_logged_and_counted_and_the_next_one_goes(
    mailing, caplog
):
    from devlab.mail import Mail

    app, _client, mailbox = mailing()
    outbox = app.extensions[OUTBOX_KEY]
    before = failures_counted()

    outbox.post(Mail(to="x@example.com\r\nBcc: y@example.com", subject="s", body="b", about="a"))
    outbox.post(Mail(to="z@example.com", subject="s", body="b", about="the next mail"))
    outbox.wait_until_sent()

    assert failures_counted() == before + 1
    assert [received.message["To"] for received in mailbox.wait_for(1)] == ["z@example.com"]


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        (
            {"SMTP_URL": "smtps://mail.example.com", "PUBLIC_BASE_URL": "http://devlab.example"},
            "PUBLIC_BASE_URL must begin with https://",
        ),
        (
            {
                "SMTP_URL": "smtps://mail.example.com",
                "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
                "SMTP_CA_FILE": "/nonexistent/ca.pem",
            },
            "SMTP_CA_FILE names no readable file",
        ),
    ],
)
def test_production_refuses_a_plain_link_base_and_a_missing_ca_file(settings, complaint):
    with pytest.raises(ConfigError, match=complaint):
        create_app(PRODUCTION | settings)


@pytest.mark.parametrize("base", ["http://localhost:8005", "http://127.0.0.2:8005"])
def test_production_takes_a_plain_link_base_on_this_machine(base):
    """docker compose's default: the API on localhost:8005, no TLS in front."""
    settings = {"SMTP_URL": "smtps://mail.example.com", "PUBLIC_BASE_URL": base}

    assert create_app(PRODUCTION | settings).config["PUBLIC_BASE_URL"] == base
