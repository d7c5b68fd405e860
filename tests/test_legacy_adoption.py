"""`flask db upgrade` adopts the FastAPI DevLab's database in place.

The database is the one in `../shared/legacy/fastapi-devlab-schema.sql` (beside the repository),
loaded into databases of these tests' own, named `adopted_` and `legacy_` followed by the test
database's name, and dropped at the end; variants add rows to it. The real `flask db upgrade`
runs on it as a separate process, as an operator would run it. Those databases' time zone is
not UTC, so that naive timestamps read in the server's zone instead of UTC would show.
"""

import shutil
import subprocess
from datetime import UTC, datetime

import psycopg2
import pytest
from alembic.script import ScriptDirectory
from psycopg2 import sql
from sqlalchemy.engine import make_url

from tests.conftest import TEST_DATABASE_URL, TEST_SETTINGS
from tests.servers import BIN, PROJECT, clean_env
from tests.test_migrations import differences_from_models

LEGACY = PROJECT.parent / "shared" / "legacy"
LEGACY_SCHEMA = LEGACY / "fastapi-devlab-schema.sql"
pytestmark = pytest.mark.skipif(
    not LEGACY_SCHEMA.exists(),
    reason=f"{LEGACY_SCHEMA} is missing: the FastAPI DevLab's database comes from ../shared",
)

HEAD = ScriptDirectory(str(PROJECT / "migrations")).get_current_head()
NOT_UTC = "America/Sao_Paulo"  # UTC-3, no daylight saving time since 2019
# The accounts of ../shared/legacy/README.md.
ACCOUNTS = {
    "admin": ("admin-pass-2025", "$pbkdf2-sha256$"),
    "rafael": ("rafael-devlab-1", "$pbkdf2-sha256$"),
    "longpass": ("a" * 100 + "é", "$pbkdf2-sha256$"),
    "earlybird": ("early-bird-pw", "$2b$"),
}
LEGACY_ROWS = {"users": 4, "notes": 4, "audit_logs": 7}


def libpq(url) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Database:
    """A database of these tests' own beside the test database; its time zone is not UTC."""

    # What its last `flask db upgrade` printed, for the tests that share one adoption.
    result: subprocess.CompletedProcess | None = None

    def __init__(self, prefix: str) -> None:
        test_database = make_url(TEST_DATABASE_URL)
        self.name = f"{prefix}_{test_database.database}"
        self.url = test_database.set(database=self.name).render_as_string(hide_password=False)

    def _connect(self, database: str):
        connection = psycopg2.connect(libpq(self.url), dbname=database)
        connection.autocommit = True
        return connection

    def _on_server(self, *statements: sql.Composable) -> None:
        connection = self._connect("postgres")
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        connection.close()

    def create(self) -> None:
        name = sql.Identifier(self.name)
        self._on_server(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name),
            sql.SQL("CREATE DATABASE {}").format(name),
            sql.SQL("ALTER DATABASE {} SET timezone TO {}").format(name, sql.Literal(NOT_UTC)),
        )

    def drop(self) -> None:
        self._on_server(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.name)))

    def query(self, statement: str | sql.Composable, **params) -> list[tuple]:
        connection = self._connect(self.name)
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall() if cursor.description else []
        connection.close()
        return rows

    def load_legacy(self, *then: str | sql.Composable) -> None:
        """Make it the FastAPI DevLab's database as the shared file has it, then run `then`."""
        self.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        self.query(LEGACY_SCHEMA.read_text(encoding="utf-8"))
        for statement in then:
            self.query(statement)

    def flask_db(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [BIN / "flask", "db", *args],
            cwd=PROJECT,
            env=clean_env(DATABASE_URL=self.url, JWT_SECRET_KEY=TEST_SETTINGS["JWT_SECRET_KEY"]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def upgrade(self, *args: str) -> subprocess.CompletedProcess:
        result = self.flask_db("upgrade", *args)
        assert result.returncode == 0, result.stderr
        return result

    def dump(self) -> str:
        """Everything in it, schema and rows, as pg_dump writes it."""
        return subprocess.run(
            [
                shutil.which("pg_dump") or "pg_dump",
                "--restrict-key=devlab",
                "--dbname",
                libpq(self.url),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout

    def stored_hash(self, username: str) -> str:
        [(hashed,)] = self.query(
            "SELECT hashed_password FROM users WHERE username = %(name)s", name=username
        )
        return hashed


# Everything in the public schema but the order of columns, which ALTER TABLE cannot change:
# relations, columns (type, NOT NULL, default, sequence), sequences, constraints, indexes,
# triggers and functions, each as PostgreSQL itself writes its definition.
CATALOG = """
SELECT 'relation', c.relname, c.relkind::text
FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'column', c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
       || coalesce(' SEQUENCE ' || pg_get_serial_sequence(c.oid::regclass::text, a.attname), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
  AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'sequence', s.seqrelid::regclass::text,
       format_type(s.seqtypid, NULL) || ' ' || s.seqstart || ' ' || s.seqincrement || ' '
       || s.seqmin || ' ' || s.seqmax || ' ' || s.seqcache || ' ' || s.seqcycle
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'trigger', tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid)
FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function', p.proname, pg_get_functiondef(p.oid)
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
"""


def catalog(url: str) -> set[tuple]:
    connection = psycopg2.connect(libpq(url))
    with connection.cursor() as cursor:
        cursor.execute(CATALOG)
        rows = set(cursor.fetchall())
    connection.close()
    return rows


@pytest.fixture(scope="module")
def adopted(app):
    """The legacy database upgraded once, for the tests that only read it."""
    database = Database("adopted")
    database.create()
    database.load_legacy()
    database.result = database.upgrade()
    yield database
    database.drop()


@pytest.fixture(scope="module")
def legacy(app):
    """An empty database for the tests that load the legacy one and change it."""
    database = Database("legacy")
    database.create()
    yield database
    database.drop()


@pytest.fixture
def app_on(app_with):
    """The app on one of these databases, with the test settings."""

    def make(database: Database):
        return app_with(SQLALCHEMY_DATABASE_URI=database.url)

    return make


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def instant(written: str) -> datetime:
    return datetime.fromisoformat(written).astimezone(UTC)


def log_in(client, username: str, password: str):
    return client.post("/login", json={"username": username, "password": password})


def add_user(username: str, email: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO users (username, email, hashed_password, created_at, is_admin) "
        "VALUES ({}, {}, 'x', '2025-11-20 12:00:00', false)"
    ).format(sql.Literal(username), sql.Literal(email))


# --- the adoption ---


def test_an_upgrade_adopts_the_legacy_database_and_says_so(adopted):
    assert "Adopting the FastAPI DevLab's tables as revision 0001" in adopted.result.stderr
    assert "users (4 rows), notes (4 rows), audit_logs (7 rows)" in adopted.result.stderr
    assert "Running upgrade 0001 -> 0002" in adopted.result.stderr
    assert adopted.query("SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_every_legacy_row_is_kept_with_its_id(adopted):
    counts = {
        table: adopted.query(f"SELECT count(*) FROM {table}")[0][0]  # noqa: S608 (our names)
        for table in LEGACY_ROWS
    }

    assert counts == LEGACY_ROWS
    assert adopted.query(
        "SELECT id, username, email, is_admin, is_active FROM users ORDER BY id"
    ) == [
        (1, "admin", "admin@amazontech.dev", True, True),
        (2, "rafael", "rafael@amazontech.dev", False, True),
        (3, "longpass", "longpass@example.com", False, True),
        (4, "earlybird", "earlybird@example.com", False, True),
    ]
    assert adopted.query("SELECT id, owner_id, text FROM notes ORDER BY id") == [
        (1, 2, "primeira nota: testar JWT no Swagger"),
        (2, 2, "lembrar: docker compose down -v apaga o volume"),
        (3, 1, "nota do admin"),
        (4, 1, ""),  # NULL in the FastAPI version
    ]
    assert adopted.query("SELECT id, action, detail, ip, user_id FROM audit_logs ORDER BY id") == [
        (1, "signup", "user admin created", "172.18.0.1", 1),
        (2, "signup", "user rafael created", "172.18.0.1", 2),
        (3, "login_success", "rafael logged in", "172.18.0.1", 2),
        (4, "note_created", "note 1", "172.18.0.1", 2),
        (5, "login_failed", "bad password for admin", "172.18.0.1", 1),
        (6, "login_success", "admin logged in", "172.18.0.1", 1),
        (7, "note_created", "note 3", "172.18.0.1", 1),
    ]
    for username, (_, scheme) in ACCOUNTS.items():
        assert adopted.stored_hash(username).startswith(scheme)


def test_naive_timestamps_are_read_as_utc_whatever_the_servers_time_zone(adopted):
    assert adopted.query("SHOW timezone") == [(NOT_UTC,)]

    assert adopted.query("SELECT created_at FROM users ORDER BY id") == [
        (utc(2025, 11, 8, 14, 2, 11, 512334),),
        (utc(2025, 11, 11, 9, 30, 0, 4100),),
        (utc(2025, 11, 12, 18, 45, 59, 999999),),
        (utc(2025, 11, 7, 21, 10, 3, 250000),),
    ]
    assert adopted.query("SELECT created_at, updated_at FROM notes WHERE id = 1") == [
        (utc(2025, 11, 11, 9, 31, 12, 1), utc(2025, 11, 11, 9, 31, 12, 1))
    ]
    assert adopted.query("SELECT created_at FROM audit_logs WHERE id IN (1, 7) ORDER BY id") == [
        (utc(2025, 11, 8, 14, 2, 11, 600000),),
        (utc(2025, 11, 17, 10, 15, 42, 200000),),
    ]


def test_the_adopted_database_matches_the_models(adopted, app_on):
    with app_on(adopted).app_context():
        assert differences_from_models() == []


def test_the_adopted_database_is_built_as_one_devlab_made_but_for_column_order(adopted):
    """The test database was built by the migrations alone (conftest.py)."""
    adopted_catalog = catalog(adopted.url)
    devlab_catalog = catalog(TEST_DATABASE_URL)

    assert adopted_catalog - devlab_catalog == set()
    assert devlab_catalog - adopted_catalog == set()


def test_the_adopted_audit_rows_are_chained_and_verify(adopted, app_on):
    runner = app_on(adopted).test_cli_runner()
    rows = adopted.query("SELECT count(*) FROM audit_logs")[0][0]

    result = runner.invoke(args=["audit", "verify"])

    assert rows > 0
    assert (result.exit_code, result.output) == (0, f"{rows} rows checked: ok\n")


def test_a_second_upgrade_changes_nothing(adopted):
    before = adopted.dump()

    again = adopted.upgrade()

    assert "Adopting" not in again.stderr
    assert "Running upgrade" not in again.stderr
    assert adopted.dump() == before


# --- using it ---


def test_each_legacy_account_logs_in_with_its_old_password_and_moves_to_argon2id(legacy, app_on):
    legacy.load_legacy()
    legacy.upgrade()
    client = app_on(legacy).test_client()

    for username, (password, scheme) in ACCOUNTS.items():
        assert log_in(client, username, "not the password").status_code == 401
        assert legacy.stored_hash(username).startswith(scheme)

        response = log_in(client, username, password)

        assert response.status_code == 200, username
        token = response.get_json()["access_token"]
        me = client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert me.get_json()["username"] == username
        assert legacy.stored_hash(username).startswith("$argon2id$")
        assert log_in(client, username, password).status_code == 200


def test_adopted_rows_read_as_utc_through_the_api_and_new_ones_take_the_next_ids(legacy, app_on):
    legacy.load_legacy()
    legacy.upgrade()
    client = app_on(legacy).test_client()
    login = log_in(client, "admin", ACCOUNTS["admin"][0]).get_json()
    headers = {"Authorization": f"Bearer {login['access_token']}"}

    notes = client.get("/notes", headers=headers).get_json()["notes"]
    signups = client.get("/audit/logs?action=signup", headers=headers).get_json()["logs"]
    created = client.post("/notes", json={"text": "after the move"}, headers=headers)

    # The same instants; written with the offset of the connection's time zone.
    assert [(note["id"], note["text"], instant(note["created_at"])) for note in notes] == [
        (4, "", utc(2025, 11, 17, 10, 16, 0, 0)),
        (3, "nota do admin", utc(2025, 11, 17, 10, 15, 42, 123456)),
    ]
    assert [(row["id"], instant(row["created_at"])) for row in signups] == [
        (2, utc(2025, 11, 11, 9, 30, 0, 100000)),
        (1, utc(2025, 11, 8, 14, 2, 11, 600000)),
    ]
    assert created.status_code == 201
    assert created.get_json()["id"] == 5


# --- what stops it, changing nothing ---


@pytest.mark.parametrize(
    ("clash", "named", "rename"),
    [
        (
            add_user("Rafael", "other@example.com"),
            ["usernames that differ only in case", "id 2 'rafael', id 5 'Rafael'"],
            "UPDATE users SET username = 'rafael-2' WHERE id = 5",
        ),
        (
            add_user("rafa", "Rafael@AmazonTech.dev"),
            [
                "email addresses that differ only in case",
                "id 2 'rafael@amazontech.dev', id 5 'Rafael@AmazonTech.dev'",
            ],
            "UPDATE users SET email = 'rafa@example.com' WHERE id = 5",
        ),
    ],
    ids=["username", "email"],
)
def test_a_case_clash_stops_the_upgrade_changing_nothing_until_one_account_is_renamed(
    legacy, clash, named, rename
):
    legacy.load_legacy(clash)
    before = legacy.dump()

    refused = legacy.flask_db("upgrade")

    assert refused.returncode != 0
    for words in named:
        assert words in refused.stderr
    assert "WHERE id = 5;" in refused.stderr
    assert "DevLab never merges, deletes or renames an account itself" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert legacy.dump() == before
    assert legacy.query("SELECT to_regclass('alembic_version')") == [(None,)]

    legacy.query(rename)
    legacy.upgrade()

    assert legacy.query("SELECT count(*) FROM users") == [(5,)]


def test_rows_devlab_cannot_hold_stop_the_upgrade_and_are_named(legacy):
    legacy.load_legacy(
        add_user("x" * 33, "long@example.com"),
        "INSERT INTO notes (text, created_at, owner_id) VALUES ('orphan', now(), NULL)",
        "UPDATE audit_logs SET created_at = NULL WHERE id IN (2, 3)",
    )
    before = legacy.dump()

    result = legacy.flask_db("upgrade")

    assert result.returncode != 0
    assert "users.username holds more than 32 characters" in result.stderr
    assert "in the row with id 5" in result.stderr
    assert "notes.owner_id is empty in the row with id 5" in result.stderr
    assert "audit_logs.created_at is empty in the rows with id 2, 3" in result.stderr
    assert legacy.dump() == before


def test_a_failure_after_adopting_leaves_the_database_as_it_was(legacy):
    """Revision 0002 creates token_families; here one is in its way."""
    legacy.load_legacy("CREATE TABLE token_families (id integer)")
    before = legacy.dump()

    result = legacy.flask_db("upgrade")

    assert result.returncode != 0
    assert "Adopting the FastAPI DevLab's tables" in result.stderr
    assert 'relation "token_families" already exists' in result.stderr
    assert legacy.dump() == before


def test_a_database_with_only_some_of_the_tables_is_refused_clearly(legacy):
    legacy.load_legacy("DROP TABLE audit_logs")
    before = legacy.dump()

    result = legacy.flask_db("upgrade")

    assert result.returncode != 0
    assert "holds notes, users but not audit_logs" in result.stderr
    assert legacy.dump() == before


# --- only an upgrade adopts ---


def test_other_commands_leave_the_legacy_database_alone(legacy):
    legacy.load_legacy()
    before = legacy.dump()

    assert legacy.flask_db("current").returncode == 0

    assert legacy.dump() == before


def test_an_upgrade_to_0001_adopts_and_records_it(legacy):
    legacy.load_legacy()

    legacy.upgrade("0001")

    assert legacy.query("SELECT version_num FROM alembic_version") == [("0001",)]
    assert legacy.query("SELECT to_regclass('token_families')") == [(None,)]
    assert legacy.query(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_name = 'notes' AND column_name = 'updated_at'"
    ) == [("timestamp with time zone",)]
