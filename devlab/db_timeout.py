"""A PostgreSQL that stops answering costs a request under a second, and /health nothing.

libpq bounds only its own connection attempts (connect_timeout, 2 s at least), and nothing
bounds a wait for an answer that never comes. A server that accepts TCP and then says nothing
(a hung host, a proxy or pooler whose upstream is gone) would hold each request until gunicorn
kills the worker: TCP keepalives and tcp_user_timeout don't fire while something on the way
still acknowledges the packets. A deadline on each wait is not enough either: a gthread worker's
thread stuck in a wait holds back the requests queued behind it, `/health` among them. With a
2-second deadline, 24 clients on 2 workers of 4 threads waited up to 12 s for their 503, and
`/health` up to 10 s. Nor can any deadline tell a slow statement from a silent server. So
PostgreSQL times its own work, and silence is found out on the side:

- Statements. Each transaction of a request runs under statement_timeout =
  DATABASE_TIMEOUT_SECONDS and lock_timeout = half that, set with SET LOCAL (see "Per
  transaction" below). A slow statement ends with PostgreSQL's "canceling statement" (503), a
  wait for a row lock with its "lock not available" (503 busy, see errors.py), and the
  connection stays usable.
- Silence. psycopg2 does all its waiting in `wait_with_deadline`. A wait unanswered for
  SUSPECT_AFTER_SECONDS has the process probe the server, unless a probe began since the wait
  did: a new connection must have an answer to SELECT 1 within PROBE_SECONDS. An error is an
  answer too (a server that refuses fails requests at once by itself). Only if the probe hears
  nothing, and no other wait of the process had its answer meanwhile, does the `Breaker` open:
  then every wait fails within CHECK_EVERY_SECONDS, in flight or new, without waiting on the
  server, until a probe hears it again; while open, the first wait after every RETRY_SECONDS
  probes before it starts. A failed wait closes its connection, which SQLAlchemy takes as a
  disconnect, so the pool is replaced.
- A last deadline, twice DATABASE_TIMEOUT_SECONDS, for the one connection that went silent while
  the server still answers probes (a dropped NAT entry, say). Connection attempts get
  DATABASE_TIMEOUT_SECONDS.

A lock wait on a live server thus ends as "busy", not as an outage: PostgreSQL ends it by its
own clock at a quarter of the last deadline, and the breaker opens only when a fresh connection
hears nothing for half a second, nor any other wait of the process. Before, a lock timeout of
75% raced the client's deadline on the whole statement, and lost when the statement spent a
quarter of it before its lock wait or its answer came late.

Measured with the outage proxy on a loaded 2-core machine (tests/test_outage.py): a black-holed
server fails the requests in flight after 0.7 s, a `/health` queued behind them answers within
0.75 s, and the 24 clients then get their 503s in 0.02-0.05 s (median). A probe costs a live
server one connection (6-11 ms median, 220 ms at worst under load), and only after a wait took
0.2 s. It runs in the waiting thread: a thread of its own would have to be started in each
worker after the fork, and kept alive. The waits stay in Python: libpq's own bounds cannot see
a black hole, and the wait callback cost no measurable throughput (634 against 598 requests a
second, within noise).

CLI commands (a migration may take minutes) get no statement or lock timeout and no deadline on
their statements.

Per transaction, because of PgBouncer. In transaction pooling a server connection serves
another client after each COMMIT, so session state leaks: a session-level `SET` (how the
timeouts used to be set, once per connection) would reach other clients' transactions, and a
CLI command's "no timeout" would reach requests. What holds both straight to PostgreSQL and
through PgBouncer in transaction mode, measured on this machine (a transaction of one
`SELECT 1` over loopback: 63 µs; medians of 4,000, interleaved runs):

- `SET LOCAL` as a statement of its own at each BEGIN: +25 µs, one more round trip and one
  more statement per request (tests/test_statement_counts.py holds the budgets).
- `SET LOCAL` sent with the transaction's first statement, in the same simple-query message
  (`SET LOCAL statement_timeout = 2000; SET LOCAL lock_timeout = 1000; SELECT ...`): +1 to
  2 µs, no round trip, and the statement count stays. PostgreSQL (13 and later) times each
  statement of such a message by itself, with the value the SET LOCAL before it gave: a
  `pg_sleep(2)` after `SET LOCAL statement_timeout = 300` was cancelled at 0.30 s.
- libpq's `options` (`-c statement_timeout=...`) in the startup packet: free, but session
  state. Debian's PgBouncer (1.18) refuses the parameter ("unsupported startup parameter:
  options") unless told to ignore it, which drops the timeouts; 1.20 and later parse it but
  accept `-c` only for the parameters they track, and `track_extra_parameters` can track only
  those PostgreSQL reports to clients, which statement_timeout and lock_timeout are not.
- Settings of the app's role (`ALTER ROLE ... SET statement_timeout`): free and unleakable,
  but a second place to keep equal to DATABASE_TIMEOUT_SECONDS, a step for every database
  administrator, and they would bind migrations that run as that role too.

So a request's transactions carry their timeouts in the message that begins them, and a read
that runs as a transaction of its own in its own message (devlab/db_transactions.py): nothing
is left on a connection, whoever uses it next; CLI commands send nothing, so they are unlimited
on any connection, through PgBouncer too. The statements this adds are visible in PostgreSQL's
logs and pg_stat_activity as a prefix of those statements. Server-side prepared statements
(psycopg2 makes none) and session-level advisory locks (the audit chain takes
pg_advisory_xact_lock) are the other session state; DevLab uses neither.
"""

import math
import select
import threading
import time
import weakref

import click
import psycopg2
from flask import Flask, current_app, has_app_context
from psycopg2 import extensions
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from devlab.extensions import db

BREAKER = "devlab.database_breaker"
# A wait unanswered this long makes the process ask whether the server answers at all.
SUSPECT_AFTER_SECONDS = 0.2
# A new connection's SELECT 1 takes milliseconds on a live server, nearby and even busy.
PROBE_SECONDS = 0.5
# How soon a wait notices that another thread found the server silent.
CHECK_EVERY_SECONDS = 0.05
# While the server is silent, one wait in this many seconds probes it; errors.py's Retry-After.
RETRY_SECONDS = 1
# The SET LOCALs of a request's transaction.
TIMEOUTS = "devlab.transaction_timeouts"
IDLE_SINCE = "devlab.idle_since"
# A connection that sat in the pool longer than this is pinged before a request uses it: the
# server may have restarted or dropped it meanwhile. One busy enough to come back sooner is
# not, which spares nearly every request the round trip of SQLAlchemy's pool_pre_ping.
PING_AFTER_IDLE_SECONDS = 2
# When a wait of this process last had its answer, per server (a connection's `dsn`), and the
# breakers that are open: what a wait reads before it knows its app (see wait_with_deadline).
_answered_at: dict[str, float] = {}
_open_breakers: weakref.WeakSet = weakref.WeakSet()


def init_app(app: Flask) -> None:
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg2://"):
        return
    # One callback for the whole process: psycopg2 has no per-connection setting.
    extensions.set_wait_callback(wait_with_deadline)
    with app.app_context():
        engine = db.engine
    app.extensions[BREAKER] = Breaker(engine)
    event.listen(engine, "checkin", _note_when_idle)
    event.listen(engine, "checkout", _still_answers)
    timeout_ms = app.config["DATABASE_TIMEOUT_SECONDS"] * 1000
    app.extensions[TIMEOUTS] = (
        f"SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL lock_timeout = {timeout_ms // 2}; "
    )


class Breaker:
    """Whether this process takes its PostgreSQL to be silent (open), and the probes that decide.

    Per app, hence per engine: the tests run apps on other routes to the same server side by side.
    """

    def __init__(self, engine: Engine) -> None:
        self._connect_args = engine.dialect.create_connect_args(engine.url)
        self._lock = threading.Lock()
        self.open = False
        self._probing = False
        self._probe_began = -math.inf
        self.dsn = None  # its connections' `dsn`, known from its first wait that took long

    @property
    def heard(self) -> float:
        """When a wait of this process last had its answer from this server."""
        return _answered_at.get(self.dsn, -math.inf)

    def check(self, waiting_since: float | None = None) -> None:
        """Raise if the server is taken to be silent; probe it first if a probe is due.

        A probe is due while the breaker is open once every RETRY_SECONDS, and while it is
        closed when a wait that began at `waiting_since` has seen no probe begin since.
        """
        if not self.open and waiting_since is None:
            return  # nearly every wait: nothing to decide, no lock to take
        began = time.monotonic()
        with self._lock:
            if self.open:
                due = began - self._probe_began >= RETRY_SECONDS
            else:
                due = waiting_since is not None and self._probe_began < waiting_since
            if self._probing or not due:
                if self.open:
                    raise psycopg2.OperationalError("PostgreSQL is silent; not waiting for it.")
                return
            self._probing, self._probe_began = True, began
        silent = False
        try:
            silent = not _answers(self._connect_args)
        finally:
            with self._lock:
                # An answer to any other wait meanwhile: busy, perhaps, but not silent.
                silent = silent and self.heard < began
                self._probing, was_open, self.open = False, self.open, silent
                (_open_breakers.add if silent else _open_breakers.discard)(self)
        if silent and not was_open:
            current_app.logger.error(
                "PostgreSQL gave no answer within %s s: answering 503 at once meanwhile",
                PROBE_SECONDS,
            )
        elif was_open and not silent:
            current_app.logger.warning("PostgreSQL answers again")
        if silent:
            raise psycopg2.OperationalError(f"PostgreSQL gave no answer within {PROBE_SECONDS} s.")


def _answers(connect_args: tuple[list, dict]) -> bool:
    """Whether PostgreSQL says anything to a new connection's SELECT 1 within PROBE_SECONDS."""
    args, kwargs = connect_args
    until = time.monotonic() + PROBE_SECONDS
    probe = None
    try:
        probe = psycopg2.connect(*args, **kwargs, async_=True)  # async: no wait callback
        if not _poll(probe, until):
            return False
        cursor = probe.cursor()
        cursor.execute("SELECT 1")
        return _poll(probe, until)
    except psycopg2.Error:
        return True  # refused or turned away: not silent
    finally:
        if probe is not None:
            probe.close()


def wait_with_deadline(connection) -> None:
    """psycopg2's wait callback: poll the connection until it is done or the wait must end.

    Nearly every wait has its answer within CHECK_EVERY_SECONDS while no breaker is open, and
    then needs nothing from the app: it is polled at once, and only a wait that outlasts that
    looks up its app's bounds and breaker. Made by every wait, the lookups cost a GET /notes
    about 35 µs of CPU (bench/RESULTS.md).
    """
    started = time.monotonic()
    if not _open_breakers and _poll(connection, started + CHECK_EVERY_SECONDS):
        _answered_at[connection.dsn] = time.monotonic()
        return
    breaker = _breaker_for(connection)
    if breaker is None:
        _poll(connection, None)
        return
    breaker.dsn = connection.dsn
    timeout = current_app.config["DATABASE_TIMEOUT_SECONDS"]
    limit = timeout if connection.status == extensions.STATUS_SETUP else 2 * timeout
    breaker.check()
    while not _poll(connection, time.monotonic() + CHECK_EVERY_SECONDS):
        waited = time.monotonic() - started
        if waited >= limit:
            raise psycopg2.OperationalError(f"PostgreSQL did not answer within {limit} seconds.")
        breaker.check(started if waited >= SUSPECT_AFTER_SECONDS else None)
    _answered_at[connection.dsn] = time.monotonic()


def _poll(connection, until: float | None) -> bool:
    """Drive the connection's current operation; False if `until` came first."""
    while True:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return True
        if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
            raise psycopg2.OperationalError(f"Unexpected state {state} from poll().")
        poller = select.poll()
        # Read the socket anew each time: libpq opens another one per address it tries.
        poller.register(
            connection.fileno(), select.POLLIN if state == extensions.POLL_READ else select.POLLOUT
        )
        if until is None:
            poller.poll()
            continue
        remaining = until - time.monotonic()
        if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
            return False


def _breaker_for(connection) -> Breaker | None:
    """The breaker of the app whose wait this is, if the wait is bounded at all."""
    if not has_app_context():
        return None
    breaker = current_app.extensions.get(BREAKER)  # None in another app (make bench has one)
    if connection.status != extensions.STATUS_SETUP and not _app_work():
        return None  # a CLI command's statement
    return breaker


def _note_when_idle(dbapi_connection, connection_record) -> None:
    if connection_record is not None:
        connection_record.info[IDLE_SINCE] = time.monotonic()


def _still_answers(dbapi_connection, connection_record, _connection_proxy) -> None:
    """Make sure a pooled connection still answers.

    A connection idle for longer than PING_AFTER_IDLE_SECONDS is pinged first; if it no longer
    answers, the pool is told to replace it (DisconnectionError), so recovery after a restart
    of PostgreSQL costs nobody an error.
    """
    if not has_app_context():
        return
    idle_since = connection_record.info.pop(IDLE_SINCE, None)
    if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except psycopg2.Error as error:
        raise DisconnectionError("The pooled connection no longer answers.") from error


def settings_of_transaction() -> str:
    """The SET LOCALs a transaction beginning now carries in its first message
    (devlab/db_transactions.py): a request's, its timeouts; a CLI command's, none."""
    return current_app.extensions.get(TIMEOUTS, "") if _app_work() else ""


def _app_work() -> bool:
    """Whether this is the app's own work (a request), not a CLI command such as a migration."""
    return has_app_context() and click.get_current_context(silent=True) is None
