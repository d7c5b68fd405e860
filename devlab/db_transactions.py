"""Transactions on PostgreSQL that cost no round trips of their own.

psycopg2, outside its autocommit mode, sends BEGIN by itself, as a message of its own, before a
transaction's first statement, and COMMIT when asked: a GET /notes made four round trips to
PostgreSQL for its two statements, a POST /notes five for its three, each round trip some 40 µs
of the worker's CPU (psycopg2, libpq, the kernel) besides PostgreSQL's own. And the audit
chain's lock (migration 0004), which the audit rows' INSERT takes, was held from that INSERT
until the COMMIT that came after it, across a round trip to the worker and back.

Here psycopg2 is in autocommit mode on every connection of the app's engine, and SQLAlchemy's
transactions travel with the statements:

- A SELECT that only reads (no row lock, no write in a CTE, and no call but of the functions
  that only compute, ONLY_COMPUTE) runs as a transaction of its own, with the request's SET LOCALs
  (devlab/db_timeout.py) in the same message: `SET LOCAL ...; SELECT ...`. In READ COMMITTED
  each statement reads a snapshot of its own anyway; what it no longer does is hold its tables'
  share locks until the request's commit. A request that only reads sends no BEGIN and no
  COMMIT at all.
- BEGIN, with the SET LOCALs, goes in the same message as the first statement that needs a
  transaction: a write, a locking read, any text SQL: `BEGIN; SET LOCAL ...; INSERT ...`. So does
  every statement of a transaction with an isolation level of its own (`BEGIN ISOLATION LEVEL
  ...`), from the first.
- A statement executed once with the execution option COMMITS (the commit hook's audit row,
  when the request has one) ends its transaction in its own message: `INSERT ...; COMMIT`
  (several rows go as an executemany, and their COMMIT follows alone). PostgreSQL runs the
  statements of one message in turn and stops at the first error, so the COMMIT runs only if
  the INSERT succeeded, and the chain's lock is held for PostgreSQL's own work only. As with a
  COMMIT sent alone, an answer lost on its way back leaves the outcome unknown to the request,
  which answers 503: the change and its rows then stand together or not at all.
- SQLAlchemy's commit and rollback send COMMIT or ROLLBACK only if libpq says a transaction is
  open (its transaction status, known without asking the server): after `INSERT ...; COMMIT`
  nothing is left to send.

GET /notes went from four round trips to two, POST /notes from five to three (tests/
test_transactions.py counts them). Measured (bench/RESULTS.md): the same two statements of GET
/notes without BEGIN and COMMIT cost the worker 45 µs and PostgreSQL 70 µs less.

Left to psycopg2's own way: SQLAlchemy's AUTOCOMMIT isolation level (a migration's CREATE INDEX
CONCURRENTLY must run outside a transaction), which gets no BEGIN; and a server-side cursor
(`stream_results`, `yield_per`), which psycopg2 declares only outside autocommit: its
transaction is psycopg2's, begun by psycopg2 (at the isolation level SQLAlchemy set on the
connection), and the connection goes back to autocommit when it ends. Through PgBouncer in
transaction pooling nothing changes: it sees transactions opened and closed by the statements
that make them.

Neither SQLAlchemy nor psycopg2 has a setting for this; psycopg 3's pipeline mode would, but
it is another driver (issue 8 allows it only where it measures better, and its outage handling
would have to be redone). So the engine's dialect gets its own do_commit and do_rollback, and
two event listeners do the rest.
"""

import re
from functools import lru_cache

from flask import Flask
from psycopg2 import extensions
from sqlalchemy import CompoundSelect, Select, event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import ExecuteStyle

from devlab.db_timeout import settings_of_transaction
from devlab.extensions import db

# Execution option: this statement's message ends its transaction with a COMMIT. Only for a
# statement whose results are not read: psycopg2 keeps the last result of a message, COMMIT's.
COMMITS = "devlab_commits"
BEGIN_DUE = "devlab.begin_due"
TRANSACTION = "devlab.transaction"  # how the connection's current transaction begins
# In a SELECT: a row lock (FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE, FOR KEY SHARE) or a write
# in a CTE. A false match costs only a BEGIN.
HOLDS_OR_WRITES = re.compile(r"\b(?:UPDATE|SHARE|INSERT|DELETE|MERGE)\b", re.IGNORECASE)
# What may stand before a parenthesis in a SELECT that runs alone: SQL's own words, and functions
# that only compute. Any other call (an advisory lock, set_config, nextval, now(), a function of
# the schema's own that may write) needs the request's transaction. A false match costs a BEGIN.
CALL = re.compile(r"\b(\w+)\s*\(")
ONLY_COMPUTE = frozenset(
    {
        *("select", "from", "where", "in", "any", "all", "some", "exists", "as", "on", "and"),
        *("or", "not", "over", "partition", "filter", "values", "using", "join", "union"),
        *("intersect", "except", "cast", "case", "when", "then", "else"),
        *("coalesce", "nullif", "greatest", "least", "count", "max", "min", "sum", "avg"),
        *("lower", "upper", "char_length", "length", "trim", "abs", "round", "floor", "ceil"),
    }
)
IDLE = extensions.TRANSACTION_STATUS_IDLE


def init_app(app: Flask) -> None:
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg2://"):
        return
    with app.app_context():
        engine = db.engine
    event.listen(engine, "connect", _autocommit)
    event.listen(engine, "begin", _begin)
    event.listen(engine, "before_cursor_execute", _carry_transaction, retval=True)
    engine.dialect.do_commit = _commit
    engine.dialect.do_rollback = _rollback


def _autocommit(dbapi_connection, _connection_record) -> None:
    dbapi_connection.autocommit = True


def _begin(connection: Connection) -> None:
    """SQLAlchemy begins a transaction: the first statement that needs one will bring BEGIN."""
    isolation = connection.get_execution_options().get("isolation_level")
    if isolation == "AUTOCOMMIT":
        connection.info.pop(BEGIN_DUE, None)
        connection.info.pop(TRANSACTION, None)
        return
    raw = connection.connection.dbapi_connection
    if not raw.autocommit:  # SQLAlchemy restored psycopg2's default after an AUTOCOMMIT block
        raw.autocommit = True
    begin = f"BEGIN ISOLATION LEVEL {isolation}; " if isolation else None
    connection.info[BEGIN_DUE] = connection.info[TRANSACTION] = (begin, settings_of_transaction())


def _carry_transaction(connection, cursor, statement, parameters, context, executemany):
    """Put what is due in front of the statement, and COMMIT after it if it ends the
    transaction."""
    due = connection.info.pop(BEGIN_DUE, None)
    raw = connection.connection.dbapi_connection
    if cursor.name is not None and raw.autocommit:
        # A server-side cursor: psycopg2 declares it only in a transaction of its own. Begun
        # here already, it sends a BEGIN of its own too, which PostgreSQL warns of and ignores.
        raw.autocommit = False
        if due is not None and due[1]:
            with raw.cursor() as setting:
                setting.execute(due[1])
    elif due is not None:
        begin, settings = due
        if begin is None and _reads_only(statement, context):
            # Its own transaction, of one message; the request's begins with the first
            # statement that needs one, if any does.
            connection.info[BEGIN_DUE] = due
            statement = settings + statement
        elif context is not None and context.execute_style is ExecuteStyle.EXECUTEMANY:
            # psycopg2's executemany sends the statement once per row: BEGIN goes first, alone.
            with raw.cursor() as beginning:
                beginning.execute((begin or "BEGIN; ") + settings)
        else:
            statement = (begin or "BEGIN; ") + settings + statement
    if (
        context is not None
        and context.execution_options.get(COMMITS)
        and not executemany
        and raw.autocommit
        and not (context.compiled is not None and context.compiled.effective_returning)
    ):
        statement += "; COMMIT"
        # Anything SQLAlchemy still sends before its commit begins anew, not in autocommit.
        connection.info[BEGIN_DUE] = connection.info.get(TRANSACTION)
    return statement, parameters


def _reads_only(statement: str, context) -> bool:
    """Whether a statement only reads, and holds nothing until a commit: a SELECT (of SQLAlchemy's
    making: text may say anything) with no row lock, no write in a CTE, and no call of anything
    but the functions that only compute."""
    return (
        context is not None
        and context.compiled is not None
        and isinstance(context.compiled.statement, (Select, CompoundSelect))
        and not _holds_or_writes(statement)
    )


@lru_cache(maxsize=1024)  # SQLAlchemy hands the same string for each execution of a statement
def _holds_or_writes(statement: str) -> bool:
    if HOLDS_OR_WRITES.search(statement) is not None:
        return True
    return any(name.lower() not in ONLY_COMPUTE for name in CALL.findall(statement))


def _commit(dbapi_connection) -> None:
    """The dialect's do_commit: COMMIT if a transaction is open, psycopg2's own if it is its."""
    _end(dbapi_connection, "COMMIT")


def _rollback(dbapi_connection) -> None:
    """The dialect's do_rollback (also the pool's reset of a connection it takes back)."""
    _end(dbapi_connection, "ROLLBACK")


def _end(dbapi_connection, command: str) -> None:
    raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)  # the pool's proxy
    if not raw.autocommit:  # psycopg2's transaction (a server-side cursor's)
        raw.commit() if command == "COMMIT" else raw.rollback()
        raw.autocommit = True
        return
    if raw.info.transaction_status == IDLE:
        return
    with raw.cursor() as ending:
        ending.execute(command)
