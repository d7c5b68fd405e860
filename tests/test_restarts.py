"""Stops and restarts lose nothing: SIGTERM lets requests finish, kill -9 never splits a change
from its audit row. Real gunicorn on the test database."""

import http.client
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import text

from devlab.extensions import db
from tests.conftest import PASSWORD
from tests.servers import gunicorn_process

DELAY = 3


def post(base: str, path: str, body: dict, token: str | None = None, **headers) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def token_of(base: str) -> str:
    account = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    post(base, "/signup", account)
    return post(base, "/login", {"username": "alice", "password": PASSWORD})[1]["access_token"]


def counts(app) -> dict:
    with app.app_context():
        return {
            "notes": db.session.scalar(text("SELECT count(*) FROM notes")),
            "note_created": db.session.scalar(
                text("SELECT count(*) FROM audit_logs WHERE action = 'note_created'")
            ),
        }


def worker_pids(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def test_sigterm_lets_a_request_in_flight_finish_with_its_audit_row_then_exits_0(app, tmp_path):
    settings = {"DEVLAB_TEST_REQUEST_DELAY_SECONDS": str(DELAY), "RATELIMIT_ENABLED": "0"}
    with gunicorn_process(tmp_path / "server.log", **settings) as (base, server):
        token = token_of(base)
        answers = []
        slow = threading.Thread(
            target=lambda: answers.append(
                post(
                    base,
                    "/notes",
                    {"text": "written during a stop"},
                    token,
                    **{"X-Test-Delay": "1"},
                )
            )
        )
        slow.start()
        time.sleep(1)  # the request is in flight, waiting in the app
        stopped_at = time.monotonic()
        server.send_signal(signal.SIGTERM)

        # A connection that arrives meanwhile is refused, or answered, but never left waiting.
        time.sleep(0.5)
        host, port = base.removeprefix("http://").split(":")
        started = time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=5) as late:
                late.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                late.settimeout(5)
                late.recv(100)
        except OSError:
            pass
        assert time.monotonic() - started < 5

        slow.join(timeout=30)
        exit_code = server.wait(timeout=30)
        stopped_in = time.monotonic() - stopped_at

    assert answers and answers[0][0] == 201, answers
    assert exit_code == 0
    assert stopped_in < DELAY + 5  # it did not wait for the graceful timeout (20 s)
    assert counts(app) == {"notes": 1, "note_created": 1}


def test_kill_9_of_a_worker_during_writes_never_splits_a_note_from_its_audit_row(app, tmp_path):
    settings = {"RATELIMIT_ENABLED": "0", "WEB_CONCURRENCY": "2"}
    with gunicorn_process(tmp_path / "server.log", **settings) as (base, server):
        token = token_of(base)
        killed = []

        def write(number: int) -> int:
            if number == 60:
                victim = worker_pids(server.pid)[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            try:
                return post(base, "/notes", {"text": f"note {number}"}, token)[0]
            # The connection the killed worker held: refused, reset, or cut after the headers.
            except (OSError, http.client.HTTPException):
                return 0

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(write, range(200)))

    stored = counts(app)
    assert killed
    assert stored["notes"] == stored["note_created"]
    # A request may be killed after its commit and before its answer, never the other way.
    assert statuses.count(201) <= stored["notes"] <= 200
    assert statuses.count(201) >= 100  # the other worker, and the one gunicorn started anew
