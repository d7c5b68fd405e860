"""Fixtures: one app on a freshly migrated PostgreSQL schema, empty tables for every test."""

import os

import psycopg2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from flask_migrate import upgrade
from psycopg2 import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from config import normalize_database_url
from devlab import create_app
from devlab.extensions import db

# tests/browser needs Chromium and Playwright, which `make test` does not install: `make
# e2e-browser` runs that folder (naming it collects it).
collect_ignore = ["browser"]

TEST_DATABASE_URL = normalize_database_url(
    os.environ.get("TEST_DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5432/devlab_test")
)
# The Redis that the rate-limit tests count in; they use keys of their own and delete them.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# One Ed25519 key for the run: the apps sign heads with it, and write no key file.
TEST_AUDIT_SIGNING_KEY = (
    Ed25519PrivateKey.generate()
    .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    .decode("ascii")
)
TEST_SETTINGS = {
    "TESTING": True,
    "SQLALCHEMY_DATABASE_URI": TEST_DATABASE_URL,
    "JWT_SECRET_KEY": "test-signing-key-that-is-long-enough-for-hs256",
    "AUDIT_SIGNING_KEY": TEST_AUDIT_SIGNING_KEY,
    # Cheap hashing keeps the suite fast; production costs are set in config.py.
    "ARGON2_TIME_COST": 1,
    "ARGON2_MEMORY_KIB": 8,
    "ARGON2_PARALLELISM": 1,
    # Tests that are not about rate limits log in as often as they like; test_ratelimit.py
    # turns limits on in apps of its own.
    "RATELIMIT_ENABLED": False,
    # Likewise they hash as much at once as they like; test_passwords.py bounds it in its own.
    "GUNICORN_THREADS": 64,
    "PASSWORD_HASHING_CONCURRENCY": 32,
}
PASSWORD = "correct horse battery staple"


def without_request_id(response) -> dict:
    """An error's JSON body without its `request_id`, which must be the X-Request-ID header's:
    every request has an id of its own, so two answers that must not differ differ there."""
    body = response.get_json()
    assert body.pop("request_id") == response.headers["X-Request-ID"]
    return body


def _create_test_database(url: str) -> None:
    """Create the test database if it is missing; stop the run if PostgreSQL is not there."""
    target = make_url(url)
    try:
        connection = psycopg2.connect(
            host=target.host,
            port=target.port or 5432,
            user=target.username,
            password=target.password,
            dbname="postgres",
            connect_timeout=5,
        )
    except psycopg2.OperationalError as error:
        pytest.exit(
            f"PostgreSQL is not reachable at {target.render_as_string(hide_password=True)}: "
            f"{str(error).strip()}\nStart PostgreSQL or set TEST_DATABASE_URL.",
            returncode=3,
        )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
    connection.close()


@pytest.fixture(scope="session")
def app():
    """One app and one freshly migrated schema for the whole run."""
    _create_test_database(TEST_DATABASE_URL)
    app = create_app(TEST_SETTINGS)
    with app.app_context():
        db.session.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        db.session.commit()
        upgrade()  # the real migrations, so every run tests them too
    return app


@pytest.fixture(autouse=True)
def empty_tables(app):
    with app.app_context():
        tables = ", ".join(table.name for table in db.metadata.sorted_tables)
        # The audit trail refuses TRUNCATE (migration 0004); the tests' superuser may bypass
        # the triggers for this one transaction, as no role of the app's can.
        db.session.execute(text("SET LOCAL session_replication_role = replica"))
        db.session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        db.session.commit()


@pytest.fixture
def app_with(app):
    """Make apps with settings of their own over TEST_SETTINGS; dispose of their pools after."""
    made = []

    def make(**settings):
        made.append(create_app(TEST_SETTINGS | settings))
        return made[-1]

    yield make
    for made_app in made:
        with made_app.app_context():
            db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Accounts:
    """Sign users up, log them in, and make admins, through the API as a client would."""

    def __init__(self, app, client):
        self._app = app
        self._client = client

    def signup(self, username: str = "alice", password: str = PASSWORD, **extra) -> dict:
        response = self._client.post(
            "/signup",
            json={"username": username, "email": f"{username}@example.com", "password": password},
            **extra,
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def token(self, username: str = "alice", password: str = PASSWORD) -> str:
        response = self._client.post("/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["access_token"]

    def headers(self, username: str = "alice") -> dict:
        """Sign `username` up and return the bearer header of a fresh login."""
        self.signup(username)
        return {"Authorization": f"Bearer {self.token(username)}"}

    def make_admin(self, username: str) -> None:
        result = self._app.test_cli_runner().invoke(args=["promote-admin", username])
        assert result.exit_code == 0, result.output

    def admin_headers(self, username: str = "root") -> dict:
        headers = self.headers(username)
        self.make_admin(username)
        return headers


@pytest.fixture
def accounts(app, client):
    return Accounts(app, client)


@pytest.fixture
def audit_rows(app):
    """Read the audit trail straight from the database, oldest first."""
    from devlab.models import AuditLog

    def read(action: str | None = None) -> list[AuditLog]:
        with app.app_context():
            statement = db.select(AuditLog).order_by(AuditLog.id)
            if action is not None:
                statement = statement.where(AuditLog.action == action)
            rows = db.session.scalars(statement).all()
            db.session.expunge_all()
            return rows

    return read


def delete_user_behind_the_apps_back(app, user_id: int) -> None:
    """Delete a user as a database administrator could, although the trail still names them.

    DevLab never deletes users (the trail's foreign key refuses it); the superuser bypasses
    that key (and the trail's triggers) for one transaction to see what a vanished account's
    tokens get.
    """
    with app.app_context():
        db.session.execute(text("SET LOCAL session_replication_role = replica"))
        db.session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
        db.session.commit()


@pytest.fixture
def smtp_server(tmp_path):
    """Start real SMTP servers on loopback (tests/mailbox.py); stop them after the test."""
    from tests.mailbox import SMTPServer

    started = []

    def start(**options):
        folder = tmp_path / f"smtp{len(started)}"
        folder.mkdir()
        started.append(SMTPServer(folder, **options).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()
