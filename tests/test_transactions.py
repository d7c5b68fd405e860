"""Transactions travel with their statements (devlab/db_transactions.py): BEGIN with the first,
COMMIT with the audit rows' INSERT, and every transaction still whole."""

import psycopg2
import pytest
from sqlalchemy import bindparam, func, insert, select, text, update

from bench.statements import counting_statements
from devlab.extensions import db
from devlab.models import Note, User
from tests.conftest import TEST_DATABASE_URL

NOTES = Note.__table__


@pytest.fixture
def engine(app):
    with app.app_context():
        return db.engine


@pytest.fixture
def alice(client, accounts):
    headers = accounts.headers("alice")
    assert client.post("/notes", json={"text": "first"}, headers=headers).status_code == 201
    return headers


@pytest.fixture
def alice_id(app, alice):
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.username == "alice"))


def other_connection():
    """A connection of nobody's pool, to see what is committed and what is left open."""
    url = TEST_DATABASE_URL.replace("postgresql+psycopg2://", "postgresql://")
    connection = psycopg2.connect(url)
    connection.autocommit = True
    return connection


def committed_note_texts(owner_id: int) -> list[str]:
    with other_connection() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT text FROM notes WHERE owner_id = %s ORDER BY id", (owner_id,))
        return [text for (text,) in cursor.fetchall()]


def test_a_request_that_only_reads_sends_neither_begin_nor_commit(client, alice, engine):
    with counting_statements(engine, with_transaction_control=True) as messages:
        response = client.get("/notes", headers=alice)

    assert response.status_code == 200
    assert len(messages) == 2, "\n".join(messages)
    for message in messages:  # each a transaction of its own, with the request's timeouts
        assert message.startswith("SET LOCAL statement_timeout = ")
        assert "BEGIN" not in message and "COMMIT" not in message
    assert "token_families" in messages[0]


def test_a_write_begins_with_its_first_write_and_commits_with_its_audit_rows(
    client, alice, alice_id, engine, audit_rows
):
    with counting_statements(engine, with_transaction_control=True) as messages:
        response = client.post("/notes", json={"text": "second"}, headers=alice)

    assert response.status_code == 201
    assert len(messages) == 3, "\n".join(messages)
    assert messages[0].startswith("SET LOCAL ")  # the token's family: a read
    assert messages[1].startswith("BEGIN; SET LOCAL statement_timeout = ")
    assert "INSERT INTO notes" in messages[1]
    assert messages[2].startswith("INSERT INTO audit_logs")
    assert messages[2].endswith("; COMMIT")
    assert committed_note_texts(alice_id) == ["first", "second"]
    assert [row.action for row in audit_rows("note_created")] == ["note_created"] * 2


@pytest.mark.parametrize(
    "lock",
    [
        lambda statement: statement.with_for_update(),
        lambda statement: statement.with_for_update(key_share=True),
        lambda statement: statement.with_for_update(read=True),
        lambda statement: statement.with_for_update(read=True, key_share=True),
    ],
    ids=["FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"],
)
def test_a_locking_read_begins_the_transaction_and_its_lock_lasts_until_the_end(
    app, alice_id, lock
):
    with app.app_context():
        db.session.execute(lock(select(NOTES.c.id).where(NOTES.c.owner_id == alice_id)))
        with (
            other_connection() as connection,
            connection.cursor() as cursor,
            pytest.raises(psycopg2.errors.LockNotAvailable),
        ):
            cursor.execute("SELECT id FROM notes FOR UPDATE NOWAIT")
        db.session.rollback()


def test_a_plain_read_leaves_no_transaction_open(app):
    with app.app_context():
        db.session.execute(select(func.count()).select_from(NOTES))
        raw = db.session.connection().connection.driver_connection
        assert raw.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        db.session.commit()


def test_no_connection_goes_back_to_the_pool_in_a_transaction_or_with_a_warning(
    app, client, alice, engine
):
    client.get("/notes", headers=alice)
    client.post("/notes", json={"text": "second"}, headers=alice)
    client.post("/notes", json={"text": ""}, headers=alice)  # 422, nothing written
    client.get("/notes/999999", headers=alice)  # 404
    client.post("/login", json={"username": "alice", "password": "wrong password"})  # audit only
    client.delete("/notes/1", headers={"Authorization": "Bearer forged"})  # 401

    with other_connection() as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        assert cursor.fetchone() == (0,)
    pooled = [engine.raw_connection() for _ in range(engine.pool.checkedin())]
    try:
        assert pooled
        for connection in pooled:
            assert connection.driver_connection.autocommit
            assert connection.driver_connection.notices == []
    finally:
        for connection in pooled:
            connection.close()


def test_a_rollback_undoes_the_statement_that_brought_begin(app, alice_id):
    with app.app_context():
        db.session.execute(
            insert(NOTES).values(owner_id=alice_id, text="undone", created_at=func.now())
        )
        db.session.rollback()

    assert committed_note_texts(alice_id) == ["first"]


def test_an_executemany_first_begins_the_transaction_alone(app, alice_id):
    """psycopg2 sends an executemany's statement once per row: BEGIN must go before, once."""
    with app.app_context():
        db.session.execute(
            insert(NOTES).values(owner_id=alice_id, text="second", created_at=func.now())
        )
        db.session.commit()
        renamed = (
            update(NOTES).where(NOTES.c.text == bindparam("old")).values(text=bindparam("new"))
        )
        db.session.execute(renamed, [{"old": "first", "new": "1"}, {"old": "second", "new": "2"}])
        raw = db.session.connection().connection.driver_connection
        db.session.rollback()
        assert raw.notices == []

    assert committed_note_texts(alice_id) == ["first", "second"]


def test_a_server_side_cursor_runs_in_a_transaction_of_psycopg2s_own(app, alice_id):
    with app.app_context():
        streamed = db.session.execute(select(NOTES.c.text).execution_options(yield_per=1))
        assert [row.text for row in streamed] == ["first"]
        db.session.execute(
            insert(NOTES).values(owner_id=alice_id, text="second", created_at=func.now())
        )
        raw = db.session.connection().connection.driver_connection
        assert not raw.autocommit
        timeout = db.session.scalar(text("SHOW statement_timeout"))
        db.session.commit()
        assert raw.autocommit  # back to the transactions that travel with statements
        assert raw.notices == []

    assert timeout != "0"  # the request's SET LOCALs reached it too
    assert committed_note_texts(alice_id) == ["first", "second"]


def test_a_transaction_with_an_isolation_level_begins_with_it(app):
    with app.app_context():
        connection = db.session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
        assert connection.execute(text("SHOW transaction_isolation")).scalar() == "serializable"
        db.session.rollback()
        assert db.session.scalar(text("SHOW transaction_isolation")) == "read committed"
        db.session.rollback()


def test_autocommit_gets_no_transaction_and_a_transaction_stays_one(app):
    current = text("SELECT pg_current_xact_id()")
    with app.app_context(), db.engine.connect() as connection:
        in_one = connection.execute(current).scalar(), connection.execute(current).scalar()
        connection.rollback()
        connection.execution_options(isolation_level="AUTOCOMMIT")
        on_their_own = connection.execute(current).scalar(), connection.execute(current).scalar()

    assert in_one[0] == in_one[1]
    assert on_their_own[0] != on_their_own[1]


def test_a_write_after_the_statement_that_carried_the_commit_begins_anew(app, alice_id):
    """What SQLAlchemy sends after `INSERT ...; COMMIT` and before its own commit (a flush, a
    hook's write) is a transaction again, not a statement committed on its own."""
    from devlab.db_transactions import COMMITS

    with app.app_context():
        committing = insert(NOTES).inline().execution_options(**{COMMITS: True})
        db.session.execute(
            committing.values(owner_id=alice_id, text="committed", created_at=func.now())
        )
        db.session.execute(
            insert(NOTES).values(owner_id=alice_id, text="rolled back", created_at=func.now())
        )
        db.session.rollback()

    assert committed_note_texts(alice_id) == ["first", "committed"]


@pytest.mark.parametrize(
    "call",
    [
        func.pg_try_advisory_xact_lock(72626),
        func.pg_advisory_xact_lock(72626),
        func.set_config("devlab.test", "on", True),
        func.now(),
    ],
    ids=["try advisory lock", "advisory lock", "set_config", "now"],
)
def test_a_select_that_calls_more_than_arithmetic_begins_the_transaction(app, call):
    with app.app_context():
        db.session.execute(select(call))
        raw = db.session.connection().connection.driver_connection
        in_transaction = raw.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE
        db.session.rollback()

    assert in_transaction


def test_a_select_of_counts_and_lowercase_runs_alone(app):
    with app.app_context():
        db.session.execute(
            select(func.count(), func.max(func.lower(User.username))).where(User.id > 0)
        )
        raw = db.session.connection().connection.driver_connection
        assert raw.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        db.session.commit()
