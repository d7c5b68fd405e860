"""A PostgreSQL that stops answering costs a request seconds, not a gunicorn worker.

libpq bounds only its own connection attempts (connect_timeout), and nothing bounds a statement
whose answer never comes. A server that accepts TCP and then says nothing (a hung host, a proxy
or pooler whose upstream is gone) would hold the request until gunicorn kills the worker: TCP
keepalives and tcp_user_timeout don't fire while something on the way still acknowledges the
packets, and PostgreSQL's statement_timeout needs a server that is listening.

So psycopg2 does all its waiting in `wait_with_deadline`, which gives up after
DATABASE_TIMEOUT_SECONDS on a connection attempt and on any statement but a CLI command's (a
migration may take minutes). Giving up closes the connection: SQLAlchemy takes that as a
disconnect and errors.py answers 503. A request that finds the database gone waits twice at
most: for the ping of a pooled connection that sat idle (see `_ready_for_this_work`) or its
first statement, and for one new connection.
"""

import math
import select
import time

import click
import psycopg2
from flask import Flask, current_app, has_app_context
from psycopg2 import extensions
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

from devlab.extensions import db


def init_app(app: Flask) -> None:
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg2://"):
        return
    # One callback for the whole process: psycopg2 has no per-connection setting.
    extensions.set_wait_callback(wait_with_deadline)
    with app.app_context():
        engine = db.engine
    event.listen(engine, "checkin", _note_when_idle)
    event.listen(engine, "checkout", _ready_for_this_work)


LOCK_TIMEOUT_SET = "devlab.lock_timeout_ms"
IDLE_SINCE = "devlab.idle_since"
# A connection that sat in the pool longer than this is pinged before a request uses it: the
# server may have restarted or dropped it meanwhile. One busy enough to come back sooner is
# not, which spares nearly every request the round trip of SQLAlchemy's pool_pre_ping.
PING_AFTER_IDLE_SECONDS = 2


def _note_when_idle(dbapi_connection, connection_record) -> None:
    if connection_record is not None:
        connection_record.info[IDLE_SINCE] = time.monotonic()


def _ready_for_this_work(dbapi_connection, connection_record, _connection_proxy) -> None:
    """Make sure a pooled connection still answers, and holds the lock timeout this work needs.

    A connection idle for longer than PING_AFTER_IDLE_SECONDS is pinged first; if it no longer
    answers, the pool is told to replace it (DisconnectionError), so recovery after a restart
    of PostgreSQL costs nobody an error.

    The lock timeout makes PostgreSQL itself end a wait for a row lock before our deadline
    would. A request queued behind another's lock (two changes to one note, two refreshes of
    one login) then gets a clean "lock not available" error, answered 503 as busy, instead of
    a dropped connection reported as an outage. CLI commands (migrations) keep waiting. It is
    set when a connection is checked out for other work than it last did, which in a server is
    once per connection: a pooled connection a CLI command opened (the tests do that) must not
    serve a request without the timeout, nor a request's connection a migration with it.
    """
    if not has_app_context():
        return
    idle_since = connection_record.info.pop(IDLE_SINCE, None)
    if idle_since is not None and time.monotonic() - idle_since > PING_AFTER_IDLE_SECONDS:
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except psycopg2.Error as error:
            raise DisconnectionError("The pooled connection no longer answers.") from error
    wanted_ms = int(current_app.config["DATABASE_TIMEOUT_SECONDS"] * 750) if _app_work() else 0
    if connection_record.info.get(LOCK_TIMEOUT_SET) == wanted_ms:
        return
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {wanted_ms}")
    dbapi_connection.commit()
    connection_record.info[LOCK_TIMEOUT_SET] = wanted_ms


def wait_with_deadline(connection) -> None:
    """psycopg2's wait callback: poll the connection until it is done, or out of time."""
    limit = _limit_for(connection)
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return
        if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
            raise psycopg2.OperationalError(f"Unexpected state {state} from poll().")
        poller = select.poll()
        # Read the socket anew each time: libpq opens another one per address it tries.
        poller.register(
            connection.fileno(), select.POLLIN if state == extensions.POLL_READ else select.POLLOUT
        )
        if deadline is None:
            poller.poll()
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
            raise psycopg2.OperationalError(f"PostgreSQL did not answer within {limit} seconds.")


def _limit_for(connection) -> int | None:
    if not has_app_context() or "DATABASE_TIMEOUT_SECONDS" not in current_app.config:
        return None  # no app, or another app than DevLab in this process (make bench does that)
    connecting = connection.status == extensions.STATUS_SETUP
    if connecting or _app_work():
        return current_app.config["DATABASE_TIMEOUT_SECONDS"]
    return None


def _app_work() -> bool:
    """Whether this is the app's own work (a request), not a CLI command such as a migration."""
    return has_app_context() and click.get_current_context(silent=True) is None
