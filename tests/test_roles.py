"""The app's PostgreSQL role owns nothing: it uses the tables as the app needs, and can neither
change the schema nor the audit trail. Migrations run as the owner (MIGRATION_DATABASE_URL)."""

import secrets
import subprocess

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from devlab.cli import APP_ROLE_PRIVILEGES
from devlab.extensions import db
from tests.conftest import PASSWORD, TEST_DATABASE_URL
from tests.mailbox import reset_token
from tests.servers import BIN, PROJECT, clean_env


@pytest.fixture
def app_role(app, runner):
    """A login role of its own, given the app's privileges by `flask grant-app-role`."""
    role = f"devlab_app_{secrets.token_hex(4)}"
    with app.app_context():
        db.session.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'app-role-password'"))
        db.session.commit()
    result = runner.invoke(args=["grant-app-role", role])
    assert result.exit_code == 0, result.output
    yield role
    with app.app_context():
        db.session.execute(text(f"DROP OWNED BY {role}"))
        db.session.execute(text(f"DROP ROLE {role}"))
        db.session.commit()


def as_role(role: str):
    url = make_url(TEST_DATABASE_URL)
    connection = psycopg2.connect(
        host=url.host, port=url.port, dbname=url.database, user=role, password="app-role-password"
    )
    connection.autocommit = True
    return connection


def test_every_table_says_what_the_app_role_may_do_with_it():
    assert set(APP_ROLE_PRIVILEGES) == set(db.metadata.tables)


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE notes",
        "ALTER TABLE users ADD COLUMN nickname text",
        "CREATE TABLE mine (id int)",
        "TRUNCATE token_families",
        "UPDATE audit_logs SET detail = 'x'",
        "DELETE FROM audit_logs",
        "DELETE FROM users",
        "CREATE INDEX ix_mine ON notes (text)",
        "DROP TRIGGER audit_logs_append_only ON audit_logs",
        "ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only",
    ],
)
def test_the_app_role_can_change_neither_the_schema_nor_the_trail(app_role, statement):
    connection = as_role(app_role)
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def test_the_app_serves_everything_as_its_role(app_role, app_with, smtp_server):
    url = make_url(TEST_DATABASE_URL).set(username=app_role, password="app-role-password")
    mail_server = smtp_server()
    app = app_with(
        SQLALCHEMY_DATABASE_URI=url.render_as_string(hide_password=False),
        SMTP_URL=mail_server.url(),
    )
    client = app.test_client()
    account = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}

    assert client.post("/signup", json=account).status_code == 201
    tokens = client.post("/login", json={"username": "alice", "password": PASSWORD}).get_json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    note = client.post("/notes", json={"text": "mine"}, headers=headers).get_json()
    assert (
        client.patch(f"/notes/{note['id']}", json={"text": "x"}, headers=headers).status_code == 200
    )
    assert client.delete(f"/notes/{note['id']}", headers=headers).status_code == 204
    refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    assert client.post("/token/refresh", headers=refresh).status_code == 200
    assert client.post("/logout/all", headers=headers).status_code == 204
    assert client.post("/password/forgot", json={"email": account["email"]}).status_code == 202
    (mail,) = mail_server.mailbox.wait_for(1)
    reset = {"token": reset_token(mail.message), "new_password": "chosen through the link"}
    assert client.post("/password/reset", json=reset).status_code == 204
    with app.app_context():
        runner = app.test_cli_runner()
        assert runner.invoke(args=["prune-revocations"]).exit_code == 0


def test_granting_needs_the_owner_and_says_so(app_role, app_with):
    url = make_url(TEST_DATABASE_URL).set(username=app_role, password="app-role-password")
    app = app_with(SQLALCHEMY_DATABASE_URI=url.render_as_string(hide_password=False))

    result = app.test_cli_runner().invoke(args=["grant-app-role", app_role])

    assert result.exit_code == 1
    assert "Could not grant" in result.output


def test_migrations_run_as_the_owner_named_by_migration_database_url(app_role):
    """The app's role cannot build the schema; with the owner's URL beside it, upgrade can."""
    owner = make_url(TEST_DATABASE_URL)
    scratch = owner.set(database=f"{owner.database}_roles")
    admin = psycopg2.connect(
        host=owner.host, port=owner.port, user=owner.username, dbname="postgres"
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{scratch.database}"')
    as_app = scratch.set(username=app_role, password="app-role-password")
    try:

        def upgrade(**urls):
            return subprocess.run(
                [BIN / "flask", "db", "upgrade"],
                cwd=PROJECT,
                env=clean_env(**urls),
                capture_output=True,
                text=True,
                timeout=120,
            )

        refused = upgrade(DATABASE_URL=as_app.render_as_string(hide_password=False))
        done = upgrade(
            DATABASE_URL=as_app.render_as_string(hide_password=False),
            MIGRATION_DATABASE_URL=scratch.render_as_string(hide_password=False),
        )

        assert refused.returncode == 1
        assert done.returncode == 0, done.stderr
        assert "Running upgrade 0003 -> 0004" in done.stderr
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)')
        admin.close()
