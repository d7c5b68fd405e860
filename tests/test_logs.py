"""LOG_FORMAT=json: every log line one JSON object on stdout, with its request's fields, and
never a token, a password or a query string."""

import io
import json
import logging
import re
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from flask_jwt_extended import jwt_required

from bench.statements import counting_statements
from devlab.extensions import db
from devlab.logs import USER_ID, JSONLines, without_query_strings
from tests.conftest import PASSWORD
from tests.servers import gunicorn_process

UTC_MILLISECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
BASE_FIELDS = {"time", "level", "logger", "message", "pid"}
REQUEST_FIELDS = {"request_id", "method", "path", "client"}
SECRET_IN_QUERY = "query-secret-4f0c9e1d7b2a"


@pytest.fixture
def json_lines():
    """What the app's logger writes through a JSONLines handler, captured."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JSONLines())
    logger = logging.getLogger("devlab")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in written.getvalue().splitlines()]
    logger.removeHandler(handler)


def assert_a_recent_utc_time(stamp: str) -> None:
    assert UTC_MILLISECONDS.fullmatch(stamp), stamp
    written = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - written) < timedelta(minutes=5)


def test_a_line_written_during_a_request_carries_the_requests_fields(
    app_with, accounts, json_lines
):
    alice = accounts.signup("alice")
    token = accounts.token("alice")
    app = app_with()

    @app.get("/log-something")
    @jwt_required()
    def log_something():
        app.logger.warning("saw %s", "/notes?token=abc123")
        return {}

    response = app.test_client().get(
        f"/log-something?password={SECRET_IN_QUERY}", headers={"Authorization": f"Bearer {token}"}
    )

    [line] = json_lines()
    assert set(line) == BASE_FIELDS | REQUEST_FIELDS | {"user_id"}
    assert_a_recent_utc_time(line["time"])
    assert (line["level"], line["logger"]) == ("WARNING", "devlab")
    assert line["message"] == "saw /notes?[query-removed]"
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["method"], line["path"], line["client"]) == ("GET", "/log-something", "127.0.0.1")
    assert line["user_id"] == alice["id"]


def test_a_line_written_outside_any_request_has_no_request_fields(app, json_lines):
    app.logger.warning("no request here")

    [line] = json_lines()
    assert set(line) == BASE_FIELDS
    assert line["message"] == "no request here"


def test_a_traceback_stays_on_its_line_without_query_strings(app, json_lines):
    try:
        raise ValueError(f"bad request line 'GET /x?key={SECRET_IN_QUERY} HTTP/1.1'\nsecond line")
    except ValueError:
        app.logger.exception("failed")

    [line] = json_lines()
    assert line["level"] == "ERROR"
    assert "Traceback" in line["exception"] and "second line" in line["exception"]
    assert SECRET_IN_QUERY not in json.dumps(line)


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        (
            "Invalid request from ip=127.0.0.1: Invalid HTTP request line: "
            f"'GET /notes?token={SECRET_IN_QUERY} HTTP/1.1 x'",
            "Invalid request from ip=127.0.0.1: Invalid HTTP request line: "
            "'GET /notes?[query-removed] HTTP/1.1 x'",
        ),
        (
            f"Error handling request GET /login?password={SECRET_IN_QUERY}&a=b",
            "Error handling request GET /login?[query-removed]",
        ),
        ("Is it? Nothing to cut here?", "Is it? Nothing to cut here?"),
        ("cut once: /a?[query-removed] 'b'", "cut once: /a?[query-removed] 'b'"),
    ],
)
def test_query_strings_are_cut_out_of_messages(message, kept):
    assert without_query_strings(message) == kept


@pytest.fixture
def json_app(app_with):
    """An app with LOG_FORMAT=json; the logging it sets up for the whole process is undone after."""
    root, app_logger = logging.getLogger(), logging.getLogger("devlab")
    kept = list(root.handlers), root.level, list(app_logger.handlers)
    yield app_with(LOG_FORMAT="json")
    root.handlers[:], app_logger.handlers[:] = kept[0], kept[2]
    root.setLevel(kept[1])


def test_json_logs_note_the_user_for_the_access_line_without_sql(json_app):
    environs = []  # what gunicorn's access line would read, as the app left it
    inner = json_app.wsgi_app
    json_app.wsgi_app = lambda environ, start: environs.append(environ) or inner(environ, start)
    client = json_app.test_client()
    account = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    user_id = client.post("/signup", json=account).get_json()["id"]
    login = client.post("/login", json={"username": "alice", "password": PASSWORD})
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    client.get("/notes", headers=headers)  # warm up: the pool holds a live connection
    with json_app.app_context():
        engine = db.engine

    with counting_statements(engine) as statements:
        page = client.get("/notes", headers=headers)
    failed = client.post("/login", json={"username": "alice", "password": "not it at all"})

    assert len(statements) == 2, statements  # as tests/test_statement_counts.py budgets it
    assert [login.status_code, page.status_code, failed.status_code] == [200, 200, 401]
    signed_up, logged_in, _warm_up, paged, failed_login = environs
    assert signed_up[USER_ID] == logged_in[USER_ID] == paged[USER_ID] == user_id
    assert USER_ID not in failed_login


# --- under gunicorn -------------------------------------------------------------------------


def call(base: str, method: str, path: str, body: dict | None = None, token: str | None = None):
    """(status, X-Request-ID, JSON body) of one request."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, response.headers["X-Request-ID"], json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers["X-Request-ID"], json.loads(error.read())


def send_an_unreadable_request_line(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        # A control character in the target: gunicorn refuses the line, and logs it.
        connection.sendall(f"GET /notes?token={SECRET_IN_QUERY}\x01 HTTP/1.1\r\n\r\n".encode())
        assert connection.recv(100).startswith(b"HTTP/1.1 400")


def test_under_gunicorn_every_line_is_json_on_stdout_with_its_fields_and_no_secret(app, tmp_path):
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    wrong_password = "a wrong password 9d2e7c"
    settings = {
        "LOG_FORMAT": "json",
        # Limits on, counted in a Redis that is not there: the app logs a warning in a request.
        "RATELIMIT_ENABLED": "1",
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0",
    }
    with gunicorn_process(stdout, errors=stderr, **settings) as (base, _server):
        account = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
        sent = {"signup": call(base, "POST", "/signup", account)}
        user_id = sent["signup"][2]["id"]
        sent["login"] = call(base, "POST", "/login", {"username": "alice", "password": PASSWORD})
        tokens = sent["login"][2]
        sent["failed login"] = call(
            base, "POST", "/login", {"username": "alice", "password": wrong_password}
        )
        sent["me"] = call(base, "GET", "/me", token=tokens["access_token"])
        sent["query"] = call(
            base, "GET", f"/notes?page=1&api_key={SECRET_IN_QUERY}", token=tokens["access_token"]
        )
        sent["unknown"] = call(base, "GET", f"/nowhere?token={SECRET_IN_QUERY}")
        sent["refresh"] = call(base, "POST", "/token/refresh", token=tokens["refresh_token"])
        send_an_unreadable_request_line(base)

    statuses = {name: status for name, (status, _, _) in sent.items()}
    assert statuses == {
        "signup": 201,
        "login": 200,
        "failed login": 401,
        "me": 200,
        "query": 422,
        "unknown": 404,
        "refresh": 200,
    }
    assert stderr.read_text() == ""
    lines = [json.loads(line) for line in stdout.read_text().splitlines()]
    assert all(isinstance(line, dict) and set(line) >= BASE_FIELDS for line in lines)
    for line in lines:
        assert_a_recent_utc_time(line["time"])
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "gunicorn.access", "devlab.ratelimit"} <= loggers

    access = {line["request_id"]: line for line in lines if line["logger"] == "gunicorn.access"}
    expected = {  # name: (method, path, user id)
        "signup": ("POST", "/signup", user_id),
        "login": ("POST", "/login", user_id),
        "failed login": ("POST", "/login", None),
        "me": ("GET", "/me", user_id),
        "query": ("GET", "/notes", user_id),
        "unknown": ("GET", "/nowhere", None),
        "refresh": ("POST", "/token/refresh", user_id),
    }
    for name, (method, path, user) in expected.items():
        status, request_id, _ = sent[name]
        line = access[request_id]
        assert (line["method"], line["path"], line["status"]) == (method, path, status), name
        assert line["message"] == f"{method} {path} {status}"
        assert (line["level"], line["client"], line.get("user_id")) == ("INFO", "127.0.0.1", user)
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0

    # Each worker warns once, in the first request it finds Redis away in.
    [warning] = [
        line
        for line in lines
        if line.get("request_id") == sent["signup"][1] and line["logger"] == "devlab.ratelimit"
    ]
    assert warning["level"] == "WARNING"
    assert (warning["method"], warning["path"], warning["client"]) == (
        "POST",
        "/signup",
        "127.0.0.1",
    )
    [refused] = [line for line in lines if line["message"].startswith("Invalid request")]
    assert "/notes?[query-removed] HTTP/1.1" in refused["message"], refused

    everything = stdout.read_text() + stderr.read_text()
    refreshed = sent["refresh"][2]
    secrets = [
        PASSWORD,
        wrong_password,
        SECRET_IN_QUERY,
        tokens["access_token"],
        tokens["refresh_token"],
        refreshed["access_token"],
        refreshed["refresh_token"],
        *(part for token in tokens.values() if isinstance(token, str) for part in token.split(".")),
    ]
    assert [secret for secret in secrets if secret in everything] == []
    assert "page=1" not in everything


class _Response:
    status = "201 CREATED"
    sent = 1234
    headers = [
        ("Content-Type", "application/json"),
        ("X-Request-ID", 'first"id'),
        ("X-Request-ID", "last-id"),
        ("Cache-Control", "no-store"),
    ]


class _Request:
    headers = [("HOST", "127.0.0.1:8005"), ("USER-AGENT", 'wrk "4"'), ("AUTHORIZATION", "Bearer x")]


GUNICORN_ATOMS = [
    "h",
    "l",
    "u",
    "t",
    "r",
    "s",
    "m",
    "U",
    "q",
    "H",
    "b",
    "B",
    "f",
    "a",
    "T",
    "D",
    "M",
    "L",
    "p",
]
HEADER_ATOMS = ["{x-request-id}o", "{X-Request-Id}o", "{user-agent}i", "{absent}i", "{absent}o"]


@pytest.mark.parametrize("path", ["/notes", '/notes/"quoted"', "/admin/users/7"])
def test_the_access_line_has_gunicorns_atoms_computed_only_when_named(path):
    from gunicorn.config import Config as GunicornConfig
    from gunicorn.glogging import SafeAtoms

    from devlab.logs import AccessAtoms, GunicornLogger

    logger = GunicornLogger(GunicornConfig())
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": path + "?page=2",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": path,
        "QUERY_STRING": "page=2",
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_USER_AGENT": 'wrk "4"',
    }
    took = timedelta(seconds=1, microseconds=4321)
    ours = AccessAtoms(logger, _Response, _Request, environ, took)
    gunicorns = SafeAtoms(logger.atoms(_Response, _Request, environ, took))

    for atom in [*GUNICORN_ATOMS, *HEADER_ATOMS, "{remote_addr}e", "unknown"]:
        if atom == "t":  # the date, to the second: equal unless a second began in between
            assert re.fullmatch(r"\[.+\]", ours[atom])
            continue
        assert ours[atom] == gunicorns[atom], atom
    line = '%(p)s %(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'
    assert line % AccessAtoms(logger, _Response, _Request, environ, took) == line % gunicorns
