"""The real thing: gunicorn serving the app, and the `flask` command refusing bad settings."""

import gc
import json
import os
import runpy
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from devlab.gthread_worker import LINGER_SECONDS
from tests.conftest import PASSWORD
from tests.servers import BIN, PROJECT, clean_env, free_port, gunicorn_serving


def call(base: str, method: str, path: str, body=None, token=None) -> tuple[int, dict | None]:
    request = urllib.request.Request(base + path, method=method)  # noqa: S310 (loopback)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            answer = response.read()
            return response.status, json.loads(answer) if answer else None  # 204: no body
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def gunicorn(tmp_path):
    """gunicorn with two workers on PostgreSQL, in development with no JWT secret set."""
    log = tmp_path / "gunicorn.log"
    # Rate limits off: the tests below log in more often than a client may.
    settings = {"WEB_CONCURRENCY": "2", "RATELIMIT_ENABLED": "0"}
    with gunicorn_serving(log, DEVLAB_INSTANCE_PATH=str(tmp_path / "instance"), **settings) as base:
        yield base, log


def test_workers_and_restarts_share_the_generated_signing_key(tmp_path):
    """Four workers boot at once on an empty instance folder with no JWT_SECRET_KEY set: they
    agree on one key, which a later server process (a restart) uses too."""
    instance = tmp_path / "instance"
    settings = {"RATELIMIT_ENABLED": "0", "DEVLAB_INSTANCE_PATH": str(instance)}
    credentials = {"username": "alice", "password": PASSWORD}
    with gunicorn_serving(tmp_path / "first.log", WEB_CONCURRENCY="4", **settings) as first:
        call(first, "POST", "/signup", credentials | {"email": "a@example.com"})
        tokens = [call(first, "POST", "/login", credentials)[1]["access_token"] for _ in range(8)]
        served_by_first = [call(first, "GET", "/me", token=token)[0] for token in tokens]

    with gunicorn_serving(tmp_path / "second.log", WEB_CONCURRENCY="1", **settings) as second:
        served_by_second = [call(second, "GET", "/me", token=token)[0] for token in tokens]

    assert served_by_first == served_by_second == [200] * 8
    # The JWT key and the audit trail's signing key, each made once; no drafts left.
    assert sorted(path.name for path in instance.iterdir()) == [
        "audit-signing-key.pem",
        "jwt-secret",
    ]
    for key_file in instance.iterdir():
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_gunicorn_logs_no_password_or_token(gunicorn):
    base, log = gunicorn
    call(
        base, "POST", "/signup", {"username": "bob", "email": "b@example.com", "password": PASSWORD}
    )
    token = call(base, "POST", "/login", {"username": "bob", "password": PASSWORD})[1][
        "access_token"
    ]
    call(base, "POST", "/login", {"username": "bob", "password": "wrong password!"})
    call(base, "GET", "/me", token=token)
    call(base, "GET", "/me", token=token + "tampered")

    time.sleep(0.5)
    written = log.read_text()
    assert '"POST /login" 401' in written
    for secret in (PASSWORD, "wrong password!", token, token.split(".")[2]):
        assert secret not in written


def test_gunicorn_lets_the_app_answer_an_over_long_query_value_with_json_422(gunicorn):
    base, log = gunicorn
    account = {"username": "carol", "email": "c@example.com", "password": PASSWORD}
    call(base, "POST", "/signup", account)
    token = call(base, "POST", "/login", {"username": "carol", "password": PASSWORD})[1][
        "access_token"
    ]

    status, body = call(base, "GET", "/notes?page=" + "1" * 5000, token=token)

    assert status == 422  # not gunicorn's own 414 in HTML
    assert body["errors"]["query"]["page"] == ["Not a valid integer."]
    assert "Traceback" not in log.read_text()


def raw_exchange(base: str, raw: bytes) -> tuple[int, dict]:
    """Send bytes as they are, and read the status and JSON body of the answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    return int(head.split()[1]), json.loads(body)


def chunked_request(path: str, chunks: list[bytes]) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    return head + b"".join(chunks)


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_gunicorn_chunked_bodies_keep_the_body_rules(gunicorn):
    base, log = gunicorn
    body = json.dumps({"username": "alice", "password": "x" * 20}).encode()
    padding = b" " * (64 * 1024)

    within = raw_exchange(base, chunked_request("/login", [chunk(body), b"0\r\n\r\n"]))
    too_large = raw_exchange(
        base, chunked_request("/login", [chunk(body)] + [chunk(padding)] * 17 + [b"0\r\n\r\n"])
    )
    malformed = raw_exchange(base, chunked_request("/signup", [b"ZZ\r\n{}\r\n0\r\n\r\n"]))

    assert within[0] == 401  # read whole: a well-formed login of an unknown user
    assert too_large[0] == 413
    assert malformed[0] == 400
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"DEVLAB_ENV": "production"}, "JWT_SECRET_KEY"),
        ({"DEVLAB_ENV": "production", "JWT_SECRET_KEY": "change-me"}, "JWT_SECRET_KEY"),
        ({"JWT_ACCESS_TOKEN_MINUTES": "soon"}, "JWT_ACCESS_TOKEN_MINUTES"),
        ({"TRUSTED_PROXY_HOPS": "-1"}, "TRUSTED_PROXY_HOPS"),
        ({"RATELIMIT_ENABLED": "maybe"}, "RATELIMIT_ENABLED"),
        ({"RATELIMIT_LOGIN": "ten per minute"}, "RATELIMIT_LOGIN"),
        ({"RATELIMIT_STORAGE_URI": "memcached://127.0.0.1:11211"}, "RATELIMIT_STORAGE_URI"),
        ({"FORCE_HTTPS": "maybe"}, "FORCE_HTTPS"),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
    ],
)
def test_flask_refuses_to_start_with_bad_settings(settings, variable):
    result = subprocess.run(
        [BIN / "flask", "routes"],
        cwd=PROJECT,
        env=clean_env(**settings),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert variable in result.stderr
    assert result.stderr.startswith("DevLab cannot start: ")
    assert result.stderr.count("\n") == 1  # one line, no traceback


@pytest.mark.parametrize(
    ("database", "advice"),
    [
        ("postgresql://postgres@127.0.0.1:5432/devlab_no_such_db", "(createdb devlab_no_such_db)"),
        (f"postgresql://postgres@127.0.0.1:{free_port()}/devlab", "no PostgreSQL answers at"),
        ("postgresql://devlab_no_such_role:secret@127.0.0.1:5432/devlab", "user or password"),
        ("not a url", "DATABASE_URL is not a database URL"),
    ],
)
def test_migrating_without_a_reachable_database_says_what_to_do_in_one_line(database, advice):
    result = subprocess.run(
        [BIN / "flask", "db", "upgrade"],
        cwd=PROJECT,
        env=clean_env(DATABASE_URL=database),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert advice in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    assert result.stderr.startswith("DevLab cannot start: ")


def test_gunicorn_exits_non_zero_in_production_without_a_secret():
    result = subprocess.run(
        [BIN / "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
        cwd=PROJECT,
        env=clean_env(DEVLAB_ENV="production", PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "DevLab cannot start: JWT_SECRET_KEY must be set" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_logout_in_one_server_process_holds_in_another(tmp_path):
    """Revocation lives in the database, so every process refuses a token revoked by one."""
    # One instance folder: both processes sign with the one generated development key.
    settings = {
        "WEB_CONCURRENCY": "1",
        "RATELIMIT_ENABLED": "0",
        "DEVLAB_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    with (
        gunicorn_serving(tmp_path / "a.log", **settings) as one,
        gunicorn_serving(tmp_path / "b.log", **settings) as other,
    ):
        account = {"username": "alice", "email": "a@example.com", "password": PASSWORD}
        call(one, "POST", "/signup", account)
        tokens = call(one, "POST", "/login", {"username": "alice", "password": PASSWORD})[1]
        assert call(other, "GET", "/me", token=tokens["access_token"])[0] == 200

        logout = call(one, "POST", "/logout", token=tokens["access_token"])

        assert logout[0] == 204
        assert call(other, "GET", "/me", token=tokens["access_token"])[0] == 401
        assert call(other, "POST", "/token/refresh", token=tokens["refresh_token"])[0] == 401


def test_gunicorn_answers_one_request_per_connection(gunicorn):
    """A kept-alive connection would stay with the worker that accepted it, so that one worker
    could serve a busy client's every connection while the other idled (gunicorn.conf.py)."""
    base, _log = gunicorn
    host, port = base.removeprefix("http://").split(":")

    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n" * 2)
        answered = b""
        while chunk := connection.recv(65536):
            answered += chunk

    assert answered.count(b"HTTP/1.1 200") == 1
    assert b"\r\nConnection: close\r\n" in answered


def answered_and_left_open(base: str) -> socket.socket:
    """A connection that sent GET /health, read the whole answer, and stays open."""
    host, port = base.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    answered = b""
    while chunk := connection.recv(65536):  # until the server's FIN
        answered += chunk
    assert answered.startswith(b"HTTP/1.1 200"), answered[:300]
    return connection


def seconds_for_health(base: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(base + "/health", timeout=30):  # noqa: S310 (loopback)
        return time.monotonic() - started


def test_clients_that_keep_their_connections_open_do_not_stall_the_server(gunicorn):
    """gunicorn's own close waits on the worker's event loop for the client's FIN: each such
    client stalled its worker for 2 s (devlab/gthread_worker.py). Now the loop goes on."""
    base, _log = gunicorn
    left_open = [answered_and_left_open(base) for _ in range(20)]
    try:
        waits = [seconds_for_health(base) for _ in range(10)]
    finally:
        for connection in left_open:
            connection.close()

    assert max(waits) < 0.5, waits


def test_a_connection_left_open_is_closed_by_the_server_within_seconds(gunicorn):
    """A lingering connection lasts LINGER_SECONDS at most: what the client sends after that
    meets a closed socket (a reset), not a server still reading."""
    base, _log = gunicorn
    connections = [answered_and_left_open(base) for _ in range(5)]
    time.sleep(LINGER_SECONDS + 3)  # its loop wakes at least once a second

    refused = 0
    for connection in connections:
        with connection:
            try:  # the first write draws the reset, the second fails on it
                connection.sendall(b"anyone there?")
                time.sleep(0.1)
                connection.sendall(b"anyone there?")
            except (ConnectionResetError, BrokenPipeError):
                refused += 1
    assert refused == len(connections)


def test_gunicorn_leaves_forwarded_scheme_headers_to_the_app(gunicorn):
    """Headers that contradict each other about the scheme, from the loopback address gunicorn
    would trust them from by default, get the app's answer, not gunicorn's HTML 400."""
    base, _log = gunicorn
    host, port = base.removeprefix("http://").split(":")
    request = (
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n"
        "X-Forwarded-Ssl: off\r\nX-Forwarded-Protocol: http\r\nConnection: close\r\n\r\n"
    )

    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request.encode())
        answered = b""
        while chunk := connection.recv(65536):
            answered += chunk

    head, _, body = answered.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answered[:300]
    assert json.loads(body) == {"status": "ok"}


def test_gunicorn_workers_freeze_what_they_loaded_out_of_garbage_collection():
    """What a worker holds once the app is loaded never changes, so full collections need not
    walk it (gunicorn.conf.py's post_worker_init; the p99 figures are in bench/RESULTS.md)."""
    settings = runpy.run_path(str(PROJECT / "gunicorn.conf.py"))
    assert gc.get_freeze_count() == 0
    try:
        settings["post_worker_init"](worker=None)

        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
        settings["on_exit"](server=None)  # the metrics folder reading the file made


def raw_answer(base: str, path: str, *headers: str) -> tuple[int, dict[str, list[str]]]:
    """GET `path` with `headers` sent as they are; the status and headers of the answer."""
    host, port = base.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close", *headers]
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, *header_lines = answer.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    answered: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answered.setdefault(name.strip().lower(), []).append(value.strip())
    return int(status_line.split()[1]), answered


def test_gunicorn_logs_each_requests_id_in_its_access_line_and_the_apps_lines(tmp_path):
    """Behind a trusted proxy, with PostgreSQL away so that the app logs a warning."""
    log = tmp_path / "gunicorn.log"
    settings = {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/devlab",
        "TRUSTED_PROXY_HOPS": "1",
        "WEB_CONCURRENCY": "1",
        "RATELIMIT_ENABLED": "0",
    }
    with gunicorn_serving(log, **settings) as base:
        kept = raw_answer(base, "/dbstatus", "X-Request-ID: edge-7f3a.req:0042")
        made = raw_answer(base, "/health")
        twice = raw_answer(base, "/health", "X-Request-ID: abcdefgh", "X-Request-ID: ijklmnop")

    written = log.read_text().splitlines()
    assert kept[0] == 503
    assert kept[1]["x-request-id"] == ["edge-7f3a.req:0042"]
    assert any(
        line.endswith(
            "WARNING in errors: Database unavailable: OperationalError "
            "request_id=edge-7f3a.req:0042"
        )
        for line in written
    ), written
    assert any(
        '"GET /dbstatus" 503 ' in line and line.endswith(" request_id=edge-7f3a.req:0042")
        for line in written
    ), written
    for status, headers in (made, twice):
        assert status == 200
        [request_id] = headers["x-request-id"]
        assert str(uuid.UUID(request_id)) == request_id
        assert any(
            '"GET /health" 200 ' in line and line.endswith(f" request_id={request_id}")
            for line in written
        ), written
    assert not [line for line in written if "abcdefgh" in line or "ijklmnop" in line]
