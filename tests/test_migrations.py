"""The migrations build the schema the models describe, on PostgreSQL and on SQLite."""

import subprocess
import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SAWarning

from devlab import create_app
from devlab.extensions import db
from tests.conftest import TEST_DATABASE_URL, TEST_SETTINGS
from tests.servers import BIN, PROJECT, clean_env


def differences_from_models() -> list:
    with db.engine.connect() as connection, warnings.catch_warnings():
        # SQLite cannot reflect expression indexes; alembic warns and skips them.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", SAWarning)
        return compare_metadata(MigrationContext.configure(connection), db.metadata)


def test_migrated_postgresql_schema_matches_the_models(app):
    with app.app_context():
        assert differences_from_models() == []


def test_migrations_go_down_to_nothing_and_back_up(app):
    with app.app_context():
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) == {"alembic_version"}

        upgrade()

        assert {"users", "notes", "audit_logs"} <= set(inspect(db.engine).get_table_names())
        assert differences_from_models() == []


@pytest.fixture
def sqlite_app(tmp_path):
    return create_app(
        TEST_SETTINGS | {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'devlab.db'}"}
    )


def test_migrations_build_the_schema_on_sqlite_too(sqlite_app):
    with sqlite_app.app_context():
        upgrade()

        assert differences_from_models() == []


def test_migrations_go_down_and_up_on_sqlite_keeping_case_insensitive_uniqueness(sqlite_app):
    with sqlite_app.app_context():
        upgrade()
        downgrade(revision="base")
        upgrade()

        index_sql = db.session.scalars(
            text("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'")
        ).all()
    assert any("lower(username)" in sql for sql in index_sql if sql)
    assert any("lower(email)" in sql for sql in index_sql if sql)


def test_sqlite_default_serves_the_whole_flow(sqlite_app):
    with sqlite_app.app_context():
        upgrade()
    client = sqlite_app.test_client()
    body = {"username": "alice", "email": "alice@example.com", "password": "long enough"}

    assert client.post("/signup", json=body).status_code == 201
    assert client.post("/signup", json=body | {"username": "ALICE"}).status_code == 409
    credentials = {"username": "alice", "password": "long enough"}
    token = client.post("/login", json=credentials).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    note = client.post("/notes", json={"text": "on sqlite"}, headers=headers).get_json()
    assert note["created_at"].endswith("+00:00")
    assert client.get("/notes", headers=headers).get_json()["total"] == 1
    assert client.post("/logout", headers=headers).status_code == 204
    assert client.get("/notes", headers=headers).status_code == 401  # revoked on SQLite too


def test_a_user_row_written_by_the_earlier_service_is_valid(app, client):
    """Rows inserted with only the FastAPI version's columns get the server defaults."""
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO users (username, email, hashed_password) "
                "VALUES ('legacy', 'legacy@example.com', 'not-a-hash')"
            )
        )
        db.session.commit()
        row = db.session.execute(text("SELECT is_admin, created_at FROM users")).one()

    assert row.is_admin is False
    assert row.created_at is not None
    assert client.post("/login", json={"username": "legacy", "password": "x"}).status_code == 401


def test_upgrading_a_database_with_audit_rows_chains_them_so_that_it_verifies(app, accounts):
    """A database at revision 0003 holds rows written before the chain: 0004 chains them, in
    id order, and the rows written after continue the chain."""
    accounts.headers("alice")  # a signup and a login, written before the downgrade
    with app.app_context():
        downgrade(revision="0003")
        db.session.execute(
            text(
                "INSERT INTO audit_logs (action, detail, created_at) SELECT 'note_created', "
                "'row ' || i || ' \u00e9\"\\\\', now() - i * interval '1 minute' "
                "FROM generate_series(1, 300) AS i"
            )
        )
        db.session.commit()
        upgrade()
    accounts.token("alice")  # one more row, through the trigger

    result = app.test_cli_runner().invoke(args=["audit", "verify"])

    assert (result.exit_code, result.output) == (0, "303 rows checked: ok\n")


def test_sqlite_keeps_the_trail_append_only(sqlite_app):
    with sqlite_app.app_context():
        upgrade()
        db.session.execute(text("INSERT INTO audit_logs (action) VALUES ('signup')"))
        db.session.commit()
        for statement in ("UPDATE audit_logs SET detail = 'x'", "DELETE FROM audit_logs"):
            with pytest.raises(IntegrityError, match="audit_logs is append-only"):
                db.session.execute(text(statement))
            db.session.rollback()

        assert db.session.scalar(text("SELECT count(*) FROM audit_logs")) == 1


def test_three_upgrades_started_at_once_on_an_empty_database_build_it_once(tmp_path):
    """Replicas that start together each run `flask db upgrade`: one builds the schema, the
    others wait for its lock, then find nothing to do."""
    url = make_url(TEST_DATABASE_URL).set(database=f"{make_url(TEST_DATABASE_URL).database}_race")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    try:
        env = clean_env(DATABASE_URL=url.render_as_string(hide_password=False))
        upgrades = [
            subprocess.Popen(
                [BIN / "flask", "db", "upgrade"],
                cwd=PROJECT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        outputs = [upgrade.communicate(timeout=120)[0] for upgrade in upgrades]

        assert [upgrade.returncode for upgrade in upgrades] == [0, 0, 0], outputs
        assert sum(output.count("Running upgrade  -> 0001") for output in outputs) == 1
        database = create_engine(url)
        with database.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        database.dispose()
        assert len(versions) == 1
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()
