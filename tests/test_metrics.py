"""GET /metrics: what it counts, who may read it, and that gunicorn's workers count together."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bench.statements import counting_statements
from config import ConfigError
from devlab.extensions import db
from tests.conftest import PASSWORD, without_request_id
from tests.servers import BIN, PROJECT, clean_env, free_port, gunicorn_process

NOTE_BY_ID = "/notes/<int(max=2147483647):note_id>"
NO_DATABASE = "postgresql://postgres@127.0.0.1:1/devlab"
METRICS_TOKEN = "a-metrics-token-that-is-long-enough-to-be-random"
ELSEWHERE = {"REMOTE_ADDR": "203.0.113.9"}


def read(text: str) -> dict:
    """{(sample name, frozenset of its labels): value} from the Prometheus text format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client, **kwargs) -> dict:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return read(response.get_data(as_text=True))


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def requests(method: str, route: str, status: int) -> dict:
    return {"method": method, "route": route, "status": str(status)}


# --- what is counted --------------------------------------------------------------------------


def test_requests_are_counted_by_route_template_and_status(client, accounts):
    alice = accounts.headers("alice")
    before = scrape(client)

    client.get("/notes", headers=alice)
    client.get("/notes/99", headers=alice)
    client.get("/notes/12345", headers=alice)
    client.get("/no/such/path/4242")
    client.get("/notes/not-a-number", headers=alice)
    client.delete("/signup")
    after = scrape(client)

    counted = "devlab_http_requests_total"
    assert moved(before, after, counted, **requests("GET", "/notes", 200)) == 1
    assert moved(before, after, counted, **requests("GET", NOTE_BY_ID, 404)) == 2
    assert moved(before, after, counted, **requests("GET", "unmatched", 404)) == 2
    assert moved(before, after, counted, **requests("DELETE", "unmatched", 405)) == 1
    timed = "devlab_http_request_duration_seconds_count"
    assert moved(before, after, timed, **requests("GET", NOTE_BY_ID, 404)) == 2
    assert (
        moved(
            before,
            after,
            "devlab_http_request_duration_seconds_sum",
            **requests("GET", "/notes", 200),
        )
        > 0
    )
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(route and ("99" in route or "4242" in route) for route in routes), routes


def test_a_method_no_client_should_send_counts_as_other(client):
    before = scrape(client)

    client.open("/health", method="BREW")

    assert (
        moved(
            before,
            scrape(client),
            "devlab_http_requests_total",
            method="other",
            route="unmatched",
            status="405",
        )
        == 1
    )


def test_logins_are_counted_by_outcome(client, accounts):
    accounts.signup("alice")
    before = scrape(client)

    client.post("/login", json={"username": "alice", "password": PASSWORD})
    client.post("/login", json={"username": "alice", "password": "not the password at all"})
    client.post("/login", json={"username": "nobody", "password": PASSWORD})
    client.post("/login", json={"username": "alice"})  # refused before any login: 422
    after = scrape(client)

    assert moved(before, after, "devlab_logins_total", outcome="success") == 1
    assert moved(before, after, "devlab_logins_total", outcome="failure") == 2


def test_committed_audit_rows_are_counted_by_action(client, accounts, audit_rows):
    before = scrape(client)

    alice = accounts.headers("alice")  # a signup and a login
    client.post("/notes", json={"text": "one"}, headers=alice)
    client.post("/notes", json={"text": 42}, headers=alice)  # 422: nothing written
    after = scrape(client)

    written = "devlab_audit_rows_written_total"
    assert moved(before, after, written, action="signup") == 1
    assert moved(before, after, written, action="login_success") == 1
    assert moved(before, after, written, action="note_created") == 1
    assert sum(
        value(after, written, action=a) - value(before, written, action=a)
        for a in ("signup", "login_success", "note_created")
    ) == len(audit_rows())


def test_rate_limited_requests_are_counted_by_limit(app_with, client):
    limited = app_with(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="1 per minute").test_client()
    login = {"username": "alice", "password": PASSWORD}
    before = scrape(client)

    limited.post("/login", json=login)
    answers = [limited.post("/login", json=login).status_code for _ in range(2)]

    assert answers == [429, 429]
    assert moved(before, scrape(client), "devlab_rate_limited_requests_total", limit="login") == 2


def test_database_errors_are_counted_by_kind(app_with, client, accounts):
    accounts.signup("alice")
    no_database = app_with(SQLALCHEMY_DATABASE_URI=NO_DATABASE).test_client()
    before = scrape(client)

    taken = client.post(
        "/signup", json={"username": "alice", "email": "other@example.com", "password": PASSWORD}
    )
    down = no_database.get("/dbstatus")
    after = scrape(client)

    assert (taken.status_code, down.status_code) == (409, 503)
    assert moved(before, after, "devlab_database_errors_total", kind="conflict") == 1
    assert moved(before, after, "devlab_database_errors_total", kind="unavailable") == 1


def test_connections_in_use_are_a_gauge_of_the_pool(app, client):
    with app.app_context():
        engine = db.engine
    idle = value(scrape(client), "devlab_database_connections_in_use")

    with engine.connect(), engine.connect():
        busy = value(scrape(client), "devlab_database_connections_in_use")

    assert busy == idle + 2
    assert value(scrape(client), "devlab_database_connections_in_use") == idle


# --- who may read it ----------------------------------------------------------------------------


def test_by_default_only_this_host_may_read_the_metrics(client):
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.get("/metrics", environ_base=ELSEWHERE).status_code == 404


def test_a_request_a_proxy_passed_on_is_never_let_in_by_its_address(app_with, client):
    behind_a_proxy = app_with(TRUSTED_PROXY_HOPS=1).test_client()

    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        assert client.get("/metrics", headers={header: "127.0.0.1"}).status_code == 404
    forged = behind_a_proxy.get(
        "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}, environ_base=ELSEWHERE
    )
    assert forged.status_code == 404


def test_metrics_allow_lists_addresses_and_networks(app_with):
    client = app_with(METRICS_ALLOW="10.0.0.0/8, 192.0.2.7").test_client()

    def status(address: str) -> int:
        return client.get("/metrics", environ_base={"REMOTE_ADDR": address}).status_code

    assert [status(a) for a in ("10.1.2.3", "192.0.2.7")] == [200, 200]
    assert [status(a) for a in ("192.0.2.8", "127.0.0.1", "::ffff:192.0.2.8")] == [404, 404, 404]
    assert status("::ffff:10.9.9.9") == 200


def test_the_metrics_token_lets_a_scraper_in_from_anywhere(app_with):
    client = app_with(METRICS_TOKEN=METRICS_TOKEN, METRICS_ALLOW="none").test_client()

    def status(authorization: str | None, address: str = "203.0.113.9") -> int:
        headers = {"Authorization": authorization} if authorization else {}
        return client.get(
            "/metrics", headers=headers, environ_base={"REMOTE_ADDR": address}
        ).status_code

    assert status(f"Bearer {METRICS_TOKEN}") == 200
    assert status(f"bearer {METRICS_TOKEN}") == 200
    assert status(f"Bearer {METRICS_TOKEN}", "127.0.0.1") == 200
    assert status(None, "127.0.0.1") == 404  # METRICS_ALLOW=none: no address is enough
    assert status(f"Bearer {METRICS_TOKEN}x") == 404
    assert status(f"Bearer {METRICS_TOKEN[:-1]}") == 404
    assert status(f"Basic {METRICS_TOKEN}") == 404
    assert status("Bearer ") == 404
    assert status(None) == 404


def test_without_a_token_set_no_bearer_token_opens_the_metrics(client, accounts):
    alice = accounts.headers("alice")

    assert client.get("/metrics", headers=alice, environ_base=ELSEWHERE).status_code == 404
    assert (
        client.get(
            "/metrics", headers={"Authorization": "Bearer "}, environ_base=ELSEWHERE
        ).status_code
        == 404
    )


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_a_refused_scrape_answers_as_a_path_that_does_not_exist(client, method):
    def answer(path: str, **kwargs):
        response = client.open(path, method=method, **kwargs)
        headers = {k: v for k, v in response.headers.items() if k != "X-Request-ID"}
        body = without_request_id(response) if response.get_data() else None
        return response.status_code, headers, body

    refused = answer("/metrics", environ_base=ELSEWHERE)
    unknown = answer("/metricz", environ_base=ELSEWHERE)

    assert refused == unknown
    assert refused[0] == 404
    if method not in ("GET", "HEAD"):  # even from an allowed address, only GET reads them
        assert answer("/metrics") == answer("/metricz")


def test_the_metrics_are_not_in_the_openapi_document(client):
    document = client.get("/openapi.json").get_json()

    assert not any("metrics" in path for path in document["paths"])


def test_a_scrape_writes_no_audit_row_sends_no_sql_and_meets_no_rate_limit(app_with, audit_rows):
    app = app_with(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="1 per minute")
    client = app.test_client()
    with app.app_context():
        engine = db.engine

    with counting_statements(engine) as statements:
        answers = [client.get("/metrics").status_code for _ in range(30)]

    assert answers == [200] * 30
    assert statements == []
    assert audit_rows() == []
    # The login limit is still whole: scrapes took nothing from it.
    assert client.post("/login", json={"username": "a", "password": PASSWORD}).status_code == 401
    assert client.post("/login", json={"username": "a", "password": PASSWORD}).status_code == 429


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"METRICS_ALLOW": "10.0.0.0/33"}, "METRICS_ALLOW"),
        ({"METRICS_ALLOW": "localhost"}, "METRICS_ALLOW"),
        ({"METRICS_ALLOW": " , "}, "METRICS_ALLOW"),
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN"),
        ({"METRICS_TOKEN": "change-me"}, "METRICS_TOKEN"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_unusable_metrics_and_log_settings_are_refused(app_with, settings, refused):
    with pytest.raises(ConfigError, match=refused) as error:
        app_with(**settings)

    assert "short" not in str(error.value)


# --- gunicorn's workers count together ----------------------------------------------------


def http_get(url: str, **headers) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def served(base: str) -> dict:
    status, body = http_get(base + "/metrics")
    assert status == 200, body
    return read(body.decode())


def health_answers(metrics: dict) -> float:
    return value(metrics, "devlab_http_requests_total", **requests("GET", "/health", 200))


def send_health_checks(base: str, count: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: http_get(base + "/health")[0], range(count)))
    assert statuses == [200] * count


def access_lines(log: Path, path: str) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line for line in lines if line["logger"] == "gunicorn.access" and line["path"] == path]


def workers_of(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def test_two_workers_counts_add_up_and_outlive_a_killed_worker(app, tmp_path):
    log = tmp_path / "server.log"
    settings = {"WEB_CONCURRENCY": "2", "LOG_FORMAT": "json", "TMPDIR": str(tmp_path)}
    with gunicorn_process(log, errors=tmp_path / "errors.log", **settings) as (base, server):
        send_health_checks(base, 300)
        metrics = served(base)
        answered_by = {line["pid"] for line in access_lines(log, "/health")}
        folder = next(tmp_path.glob("devlab-metrics-*"))

        victim = next(iter(answered_by))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in workers_of(server.pid) or len(workers_of(server.pid)) < 2:
            assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
            time.sleep(0.1)
        after_the_kill = served(base)

    assert len(answered_by) == 2, "one worker answered everything: nothing was added up"
    # The first health check gunicorn_process makes to see it serving counts too.
    assert health_answers(metrics) == 300 + 1
    assert health_answers(after_the_kill) == 300 + 1
    assert value(after_the_kill, "devlab_database_connections_in_use") == 0
    assert not folder.exists(), "the master leaves its temporary folder behind"


def test_a_metrics_folder_the_operator_names_is_emptied_when_gunicorn_starts(app, tmp_path):
    folder = tmp_path / "metrics"
    settings = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}

    with gunicorn_process(tmp_path / "first.log", **settings) as (base, _server):
        send_health_checks(base, 20)
        assert health_answers(served(base)) == 20 + 1
    assert list(folder.glob("*.db")), "the counts were not kept in the folder named"
    with gunicorn_process(tmp_path / "second.log", **settings) as (base, _server):
        send_health_checks(base, 5)
        assert health_answers(served(base)) == 5 + 1
    assert folder.is_dir(), "a folder the operator named is not gunicorn's to remove"


def test_a_gunicorn_that_refuses_to_start_leaves_no_metrics_folder_behind(tmp_path):
    result = subprocess.run(
        [BIN / "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
        cwd=PROJECT,
        env=clean_env(DEVLAB_ENV="production", PORT=str(free_port()), TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "DevLab cannot start: JWT_SECRET_KEY must be set" in result.stderr
    assert list(tmp_path.glob("devlab-metrics-*")) == []


def post_json(base: str, path: str, body: dict | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(condition, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def refresh_cut_short(base: str, refresh_token: str) -> None:
    """A refresh whose worker is killed while it waits: its connection is closed unanswered."""
    with contextlib.suppress(OSError):
        post_json(base, "/token/refresh", token=refresh_token)


def test_the_connections_of_a_killed_worker_leave_the_in_use_gauge(app, tmp_path):
    # A refresh waits for its login's row lock, which the test holds: a connection stays
    # checked out in a worker until the lock is free, or the worker is killed.
    settings = {"WEB_CONCURRENCY": "2", "DATABASE_TIMEOUT_SECONDS": "30"}
    with app.app_context():
        engine = db.engine
    with gunicorn_process(tmp_path / "server.log", **settings) as (base, server):
        account = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
        post_json(base, "/signup", account)
        tokens = post_json(base, "/login", {"username": "alice", "password": PASSWORD})[1]
        in_use = lambda: value(served(base), "devlab_database_connections_in_use")  # noqa: E731
        first_workers = workers_of(server.pid)

        with engine.connect() as lock_holder:
            lock_holder.execute(text("SELECT id FROM token_families FOR UPDATE"))
            waiting = threading.Thread(
                target=refresh_cut_short, args=(base, tokens["refresh_token"]), daemon=True
            )
            waiting.start()
            wait_for(lambda: in_use() == 1, "the waiting refresh's connection is not counted")
            for worker in first_workers:
                os.kill(worker, signal.SIGKILL)
            wait_for(
                lambda: len(set(workers_of(server.pid)) - set(first_workers)) == 2,
                "gunicorn did not replace its workers",
            )
            after_the_kill = in_use()
            lock_holder.rollback()
        waiting.join(timeout=30)

    assert after_the_kill == 0
