"""PostgreSQL going away under a running app: quick JSON 503s, /health up, recovery on return.

The app reaches PostgreSQL through a loopback proxy that the tests cut (connections closed,
new ones refused) or turn into a black hole (TCP accepted, nothing answered: a hung server).
"""

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from statistics import median

import click
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from devlab import create_app, db_timeout
from devlab.errors import DATABASE_BUSY, DATABASE_UNAVAILABLE
from devlab.extensions import db
from tests.conftest import (
    PASSWORD,
    TEST_DATABASE_URL,
    TEST_SETTINGS,
    Accounts,
    without_request_id,
)
from tests.locks import holding_lock
from tests.servers import BIN, PROJECT, clean_env, gunicorn_serving
from tests.tcp_proxy import TcpProxy
from tests.test_serving import call

# A functional bound on each answer during an outage, not a benchmark.
ANSWER_WITHIN_SECONDS = 5
# When a request has not answered even by then, the test stops waiting and fails.
GIVE_UP_AFTER_SECONDS = 30
# A worker that found PostgreSQL silent probes it again once a second (db_timeout.py).
RECOVERED_WITHIN_SECONDS = 3
OUTAGES = ["cut", "black_hole"]
UNAVAILABLE = {"code": 503, "status": "Service Unavailable", "message": DATABASE_UNAVAILABLE}

NEEDS_DATABASE = [
    ("post", "/signup", {"username": "carol", "email": "c@example.com", "password": PASSWORD}),
    ("post", "/login", {"username": "root", "password": PASSWORD}),
    ("get", "/me", None),
    ("get", "/notes", None),
    ("post", "/notes", {"text": "written during the outage"}),
    ("get", "/notes/1", None),
    ("patch", "/notes/1", {"text": "changed during the outage"}),
    ("delete", "/notes/1", None),
    ("get", "/admin/users", None),
    ("post", "/admin/promote/1", None),
    ("get", "/audit/logs", None),
    ("get", "/dbstatus", None),
]
NEEDS_NO_DATABASE = ["/health", "/", "/openapi.json", "/docs"]


@pytest.fixture
def proxy():
    target = make_url(TEST_DATABASE_URL)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        yield proxy


@pytest.fixture
def proxied_app(proxy):
    """An app like the suite's, reaching the same database through the proxy."""
    url = make_url(TEST_DATABASE_URL).set(host="127.0.0.1", port=proxy.port)
    settings = {"SQLALCHEMY_DATABASE_URI": url.render_as_string(hide_password=False)}
    app = create_app(TEST_SETTINGS | settings)
    yield app
    with app.app_context():
        db.engine.dispose()


def timed(app, method: str, path: str, body=None, headers=None):
    """One request from a client of its own (so threads can share the app), and its duration."""
    started = time.monotonic()
    response = getattr(app.test_client(), method)(path, json=body, headers=headers or {})
    return response, time.monotonic() - started


def answers_to(app, routes: list[tuple], headers=None) -> dict[str, tuple]:
    """Send `routes` all at once, as clients would come; each must still answer in time.

    A request stuck past GIVE_UP_AFTER_SECONDS fails the test; restoring the proxy, which the
    caller does in a `finally`, closes its connection and so ends it.
    """
    pool = ThreadPoolExecutor(max_workers=len(routes))
    futures = {
        f"{method.upper()} {path}": pool.submit(timed, app, method, path, body, headers)
        for method, path, body in routes
    }
    _, stuck = wait(futures.values(), timeout=GIVE_UP_AFTER_SECONDS)
    pool.shutdown(wait=False)
    assert not stuck, f"{len(stuck)} requests had no answer after {GIVE_UP_AFTER_SECONDS} s"
    return {route: future.result() for route, future in futures.items()}


def slow_or_wrong(answers: dict, status: int, body: dict | None) -> list[str]:
    """What fails the rule: a status, a body or a duration other than expected, or a 503
    that does not say when to try again."""
    return [
        f"{route}: {response.status_code} after {seconds:.2f} s, {response.get_json()}"
        for route, (response, seconds) in answers.items()
        if response.status_code != status
        or (body is not None and without_request_id(response) != body)
        or seconds >= ANSWER_WITHIN_SECONDS
        or (status == 503 and response.headers.get("Retry-After") != "1")
    ]


def seconds_to_recover(app) -> float:
    """How long after PostgreSQL's return the app answers /dbstatus again."""
    started = time.monotonic()
    while timed(app, "get", "/dbstatus")[0].status_code != 200:
        assert time.monotonic() - started < GIVE_UP_AFTER_SECONDS, "no recovery"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("outage", OUTAGES)
def test_during_an_outage_routes_answer_503_quickly_and_the_app_recovers(
    proxy, proxied_app, audit_rows, outage
):
    accounts = Accounts(proxied_app, proxied_app.test_client())
    headers = accounts.admin_headers("root")
    before = timed(proxied_app, "post", "/notes", {"text": "written before"}, headers)[0]
    assert before.status_code == 201
    rows_before = [(row.action, row.status_code) for row in audit_rows()]

    getattr(proxy, outage)()
    try:
        needing = answers_to(proxied_app, NEEDS_DATABASE, headers)
        not_needing = answers_to(proxied_app, [("get", path, None) for path in NEEDS_NO_DATABASE])
    finally:
        proxy.restore()

    assert slow_or_wrong(needing, 503, UNAVAILABLE) == []
    assert slow_or_wrong(not_needing, 200, None) == []
    assert not_needing["GET /health"][0].get_json() == {"status": "ok"}
    assert seconds_to_recover(proxied_app) < RECOVERED_WITHIN_SECONDS
    notes = timed(proxied_app, "get", "/notes", headers=headers)[0].get_json()["notes"]
    assert [note["text"] for note in notes] == ["written before"]
    users = timed(proxied_app, "get", "/admin/users", headers=headers)[0].get_json()["users"]
    assert [user["username"] for user in users] == ["root"]
    assert [(row.action, row.status_code) for row in audit_rows()] == rows_before
    after = timed(proxied_app, "post", "/notes", {"text": "written after"}, headers)[0]
    assert after.status_code == 201


@pytest.mark.parametrize("outage", OUTAGES)
def test_a_write_cut_off_at_its_commit_answers_503_and_leaves_nothing(
    proxy, proxied_app, audit_rows, outage
):
    accounts = Accounts(proxied_app, proxied_app.test_client())
    headers = accounts.headers("alice")
    rows_before = [(row.action, row.status_code) for row in audit_rows()]
    with proxied_app.app_context():
        engine = db.engine
    # The note is written; the database goes away just before the audit row and the COMMIT,
    # which travel in one message (devlab/db_transactions.py).
    before_the_commit(engine, lambda: getattr(proxy, outage)())

    try:
        answers = answers_to(proxied_app, [("post", "/notes", {"text": "never stored"})], headers)
    finally:
        proxy.restore()
    response, seconds = answers["POST /notes"]

    assert response.status_code == 503
    assert without_request_id(response) == UNAVAILABLE
    assert seconds < ANSWER_WITHIN_SECONDS
    assert response.headers["Cache-Control"] == "no-store"
    assert seconds_to_recover(proxied_app) < RECOVERED_WITHIN_SECONDS
    assert timed(proxied_app, "get", "/notes", headers=headers)[0].get_json()["total"] == 0
    assert [(row.action, row.status_code) for row in audit_rows()] == rows_before


def test_a_commit_whose_answer_never_comes_answers_503_and_its_change_stays_whole(
    proxy, proxied_app, audit_rows
):
    """The server commits, the answer is lost: no client can tell, but nothing is half-written."""
    accounts = Accounts(proxied_app, proxied_app.test_client())
    headers = accounts.headers("alice")
    with proxied_app.app_context():
        engine = db.engine
    before_the_commit(engine, proxy.lose_answers)

    try:
        answers = answers_to(proxied_app, [("post", "/notes", {"text": "stored unheard"})], headers)
    finally:
        proxy.restore()
    response, seconds = answers["POST /notes"]

    assert response.status_code == 503
    assert without_request_id(response) == UNAVAILABLE
    assert seconds < ANSWER_WITHIN_SECONDS
    assert seconds_to_recover(proxied_app) < RECOVERED_WITHIN_SECONDS
    notes = timed(proxied_app, "get", "/notes", headers=headers)[0].get_json()["notes"]
    assert [note["text"] for note in notes] == ["stored unheard"]
    assert [row.action for row in audit_rows("note_created")] == ["note_created"]


def before_the_commit(engine, outage) -> None:
    """Start `outage` just before the message that commits the next write is sent."""

    started = []

    def on_commit_message(_connection, _cursor, statement, *_args):
        if not started and (statement.endswith("; COMMIT") or statement == "COMMIT"):
            started.append(outage())

    event.listen(engine, "before_cursor_execute", on_commit_message)


@pytest.fixture
def sleepy_app():
    """An app with a one-second limit, and a route and a command that sleep in PostgreSQL."""
    app = create_app(TEST_SETTINGS | {"DATABASE_TIMEOUT_SECONDS": 1})

    @app.get("/sleep")
    def sleep_in_a_request():
        db.session.execute(text("SELECT pg_sleep(3)"))
        return {"slept": True}

    @app.get("/sleep-then-lock/<int:note_id>")
    def sleep_then_lock_in_a_request(note_id):
        db.session.execute(
            text("SELECT pg_sleep(0.35) FROM notes WHERE id = :id FOR UPDATE"), {"id": note_id}
        )
        return {"locked": True}

    @app.cli.command("sleep")
    def sleep_in_a_command():
        db.session.execute(text("SELECT pg_sleep(1.5)"))
        click.echo("slept")

    yield app
    with app.app_context():
        db.engine.dispose()


def test_a_statement_outlasting_the_limit_in_a_request_answers_503(sleepy_app):
    answers = answers_to(sleepy_app, [("get", "/sleep", None)])

    response, seconds = answers["GET /sleep"]
    assert response.status_code == 503
    assert without_request_id(response) == UNAVAILABLE
    assert 1 <= seconds < 3


def test_a_lock_wait_that_begins_late_in_its_statement_still_answers_503_busy(
    app, sleepy_app, accounts
):
    """PostgreSQL times the lock wait, and the statement, by its own clock: the client's waits
    never decide for a live server. Work before the lock wait (here 0.35 s of the statement, on
    a loaded machine a slow start) counts on the client's clock alone; with a 0.75 s lock timeout
    under a 1 s deadline on that clock, as before, the request answered "unavailable"."""
    headers = accounts.headers("alice")
    note = app.test_client().post("/notes", json={"text": "x"}, headers=headers).get_json()

    with holding_lock(app, "SELECT id FROM notes WHERE id = :id FOR UPDATE", id=note["id"]):
        answers = answers_to(sleepy_app, [("get", f"/sleep-then-lock/{note['id']}", None)])

    response, _ = next(iter(answers.values()))
    assert response.status_code == 503
    assert response.get_json()["message"] == DATABASE_BUSY


def test_a_command_line_statement_may_outlast_the_limit(sleepy_app):
    result = sleepy_app.test_cli_runner().invoke(args=["sleep"])

    assert result.exit_code == 0, result.output
    assert "slept" in result.output


SHOW_TIMEOUTS = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"


def test_timeouts_last_one_transaction_and_leave_nothing_on_the_connection():
    """One pooled connection serves CLI commands and requests in turn, as a PgBouncer server
    connection serves every client: each request's transactions have the timeouts, and
    nothing of them stays on the connection for its next user (a command, or here last a
    plain connection outside any request)."""
    app = create_app(
        TEST_SETTINGS
        | {
            "DATABASE_TIMEOUT_SECONDS": 1,
            # One connection in all, used by everyone in turn.
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0, "pool_timeout": 5},
        }
    )

    @app.get("/timeouts")
    def timeouts_in_a_request():
        first = db.session.execute(text(SHOW_TIMEOUTS)).one()
        second = db.session.execute(text(SHOW_TIMEOUTS)).one()  # the same transaction
        return {"first": list(first), "second": list(second)}

    @app.cli.command("timeouts")
    def timeouts_in_a_command():
        click.echo(" ".join(db.session.execute(text(SHOW_TIMEOUTS)).one()))

    client, runner = app.test_client(), app.test_cli_runner()
    with app.app_context():
        engine = db.engine
    try:
        answers = [
            runner.invoke(args=["timeouts"]).output.strip(),
            client.get("/timeouts").get_json(),
            runner.invoke(args=["timeouts"]).output.strip(),
            client.get("/timeouts").get_json(),
        ]
        with engine.connect() as outside_any_request:
            left_on_the_connection = list(outside_any_request.execute(text(SHOW_TIMEOUTS)).one())
    finally:
        engine.dispose()

    in_a_request = {"first": ["1s", "500ms"], "second": ["1s", "500ms"]}
    assert answers == ["0 0", in_a_request, "0 0", in_a_request]
    assert left_on_the_connection == ["0", "0"]


@pytest.mark.parametrize("value", ["0", "soon"])
def test_flask_refuses_to_start_with_a_bad_database_timeout(value):
    result = subprocess.run(
        [BIN / "flask", "routes"],
        cwd=PROJECT,
        env=clean_env(DATABASE_TIMEOUT_SECONDS=value),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "DATABASE_TIMEOUT_SECONDS" in result.stderr


def test_a_pooled_connection_the_server_dropped_while_idle_is_replaced_unnoticed(
    app, client, accounts, monkeypatch
):
    """As after a restart of PostgreSQL: the idle connection is pinged, found dead, replaced."""
    headers = accounts.headers("alice")
    assert client.get("/me", headers=headers).status_code == 200
    monkeypatch.setattr(db_timeout, "PING_AFTER_IDLE_SECONDS", 0)
    with app.app_context():
        pooled = db.engine.pool.checkedin()
    assert pooled >= 1
    outsider = create_engine(TEST_DATABASE_URL, poolclass=NullPool)
    with outsider.begin() as killer:  # ends every other session on the test database
        ended = killer.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert ended >= pooled

    answers = [client.get("/me", headers=headers).status_code for _ in range(pooled + 1)]

    assert answers == [200] * (pooled + 1)
    with app.app_context():
        db.engine.dispose()  # no connection the server dropped outlives this test


# --- Under load, against a real gunicorn of 2 workers with 4 threads each, as shipped ---

CLIENTS = 24
CLIENT_ROUTES = ["/me", "/notes"] * (CLIENTS // 2)
LOAD_SECONDS = 6  # several probes' worth
HEALTH_WITHIN_SECONDS = 1
HEALTH_POLL_SECONDS = 0.1
# Each worker learns of the outage well within this much of it, and then answers at once.
KNOWN_WITHIN_SECONDS = 2
AT_ONCE_SECONDS = 0.25


@dataclass(frozen=True)
class Answer:
    sent: float
    seconds: float
    status: int
    body: dict | None
    retry_after: str | None


def get(base: str, path: str, token: str | None = None) -> Answer:
    request = urllib.request.Request(base + path)  # noqa: S310 (loopback)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    sent = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=GIVE_UP_AFTER_SECONDS) as response:  # noqa: S310
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    body = json.loads(raw) if raw else None
    if status >= 400:  # every answer has an id of its own, the header's
        assert body.pop("request_id") == headers["X-Request-ID"]
    return Answer(sent, time.monotonic() - sent, status, body, headers.get("Retry-After"))


def keep_asking(base: str, path: str, token: str | None, stop: threading.Event, pause=0.0):
    """A client that asks again as soon as it has its answer (or after `pause`), until `stop`."""
    answers = []
    while not stop.is_set():
        answers.append(get(base, path, token))
        stop.wait(pause)
    return answers


def seconds_until_ok(base: str, path: str, token: str) -> float:
    started = time.monotonic()
    while get(base, path, token).status != 200:
        assert time.monotonic() - started < GIVE_UP_AFTER_SECONDS, f"{path}: no recovery"
        time.sleep(0.05)
    return time.monotonic() - started


def figures(answers: list[Answer]) -> str:
    seconds = sorted(answer.seconds for answer in answers)
    return (
        f"{len(seconds)} answers in {median(seconds):.2f} s (median), "
        f"{seconds[int(len(seconds) * 0.99)]:.2f} s (p99), {seconds[-1]:.2f} s (max)"
    )


def test_under_load_a_silent_database_costs_quick_503s_and_never_the_liveness_probe(
    proxy, tmp_path
):
    """24 clients on authenticated routes while PostgreSQL accepts connections and never
    answers: each answer is a 503 within 5 s, at once when the workers know; /health answers
    within a second throughout; every client is served again soon after PostgreSQL is back.
    (With a 2 s deadline on each wait alone: 34 answers in 6 s, of up to 12 s, /health too.)"""
    url = make_url(TEST_DATABASE_URL).set(host="127.0.0.1", port=proxy.port)
    settings = {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "RATELIMIT_ENABLED": "0",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
    }
    login = {"username": "ann", "password": PASSWORD}
    with gunicorn_serving(tmp_path / "gunicorn.log", **settings) as base:
        call(base, "POST", "/signup", login | {"email": "ann@example.com"})
        token = call(base, "POST", "/login", login)[1]["access_token"]
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=CLIENTS + 1) as pool:
            proxy.black_hole()
            began = time.monotonic()
            health = pool.submit(keep_asking, base, "/health", None, stop, HEALTH_POLL_SECONDS)
            clients = [pool.submit(keep_asking, base, path, token, stop) for path in CLIENT_ROUTES]
            time.sleep(LOAD_SECONDS)
            stop.set()
            health_answers = health.result()
            answers = [answer for client in clients for answer in client.result()]
            proxy.restore()
            recovery = list(
                pool.map(lambda path: seconds_until_ok(base, path, token), CLIENT_ROUTES)
            )

    slow_health = [
        answer
        for answer in health_answers
        if answer.status != 200 or answer.seconds >= HEALTH_WITHIN_SECONDS
    ]
    slow_or_other = [
        answer
        for answer in answers
        if (answer.status, answer.body, answer.retry_after) != (503, UNAVAILABLE, "1")
        or answer.seconds >= ANSWER_WITHIN_SECONDS
    ]
    known = [answer for answer in answers if answer.sent - began > KNOWN_WITHIN_SECONDS]
    assert slow_health == [], figures(health_answers)
    assert slow_or_other == [], figures(answers)
    assert median(answer.seconds for answer in known) < AT_ONCE_SECONDS, figures(known)
    assert max(recovery) < RECOVERED_WITHIN_SECONDS
