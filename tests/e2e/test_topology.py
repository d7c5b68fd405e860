"""The production topology on loopback, through nginx as a client meets it (`make e2e`).

Clients connect from loopback addresses of their own (127.x.y.z; nginx and the instances talk
over 127.0.0.1), so that the address DevLab records is visibly the client's and not the
proxy's, and so that each test's rate limits count apart. Which instance served a request is
read from that instance's own access log, by the request's id.
"""

import http.client
import json
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from itertools import count

import psycopg2
import pytest
import redis

from devlab.errors import DATABASE_BUSY
from tests.conftest import PASSWORD, TEST_REDIS_URL
from tests.e2e.topology import HOST, Topology, connect

# nginx's $request_id: 32 hexadecimal digits (DevLab's own are UUIDs, with dashes).
NGINX_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
HSTS = "max-age=31536000; includeSubDomains"
FORGED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Real-IP": "203.0.113.8",
    "Forwarded": "for=203.0.113.9;proto=https",
    "X-Request-ID": "forged-request-id-0001",
    "X-Forwarded-Ssl": "off",
    "X-Forwarded-Protocol": "http",
}
# The run's block of loopback addresses: a /16 of 127/8 chosen at random, so that runs in the
# same minute never share a rate-limit count in Redis.
RUN_BLOCK = f"127.{random.randint(64, 254)}.{random.randint(0, 255)}."  # noqa: S311 (not secret)
ADDRESSES = (f"{RUN_BLOCK}{n}" for n in count(1))


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: dict | None

    @property
    def request_id(self) -> str:
        return self.headers["X-Request-ID"]


class Client:
    """A client on a loopback address of its own, speaking HTTPS (or HTTP) to nginx."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.address = next(ADDRESSES)
        self.tls = ssl.create_default_context(cafile=topology.tls_dir / "devlab.crt")

    def connect(self, port: int, server_name: str | None) -> socket.socket:
        sock = socket.create_connection(
            ("127.0.0.1", port), timeout=15, source_address=(self.address, 0)
        )
        if server_name is None:
            return sock
        return self.tls.wrap_socket(sock, server_hostname=server_name)

    def request(
        self,
        method: str,
        path: str,
        body=None,
        *,
        token: str | None = None,
        headers: dict | None = None,
        https: bool = True,
        host: str = HOST,
        server_name: str = HOST,
        raw: bytes | None = None,
    ) -> Answer:
        port = self.topology.https_port if https else self.topology.http_port
        connection = http.client.HTTPConnection(host)  # sends Host: <host>
        connection.sock = self.connect(port, server_name if https else None)
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            raw = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=raw, headers=sent)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return Answer(response.status, response.headers, json.loads(data) if is_json else None)

    def signup(self, username: str) -> Answer:
        answer = self.request(
            "POST",
            "/signup",
            {"username": username, "email": f"{username}@example.com", "password": PASSWORD},
        )
        assert answer.status == 201, answer.body
        return answer

    def login(self, username: str) -> Answer:
        return self.request("POST", "/login", {"username": username, "password": PASSWORD})

    def token(self, username: str) -> str:
        answer = self.login(username)
        assert answer.status == 200, answer.body
        return answer.body["access_token"]


def unique(name: str) -> str:
    return f"{name}{random.randint(0, 10**9)}"  # noqa: S311 (not secret)


@pytest.fixture(scope="session", autouse=True)
def forget_the_runs_rate_limit_counts():
    """Delete the counts this run's addresses left in Redis (the rest expire by themselves)."""
    yield
    store = redis.Redis.from_url(TEST_REDIS_URL)
    keys = list(store.scan_iter(match=f"*{RUN_BLOCK}*", count=1000))
    if keys:
        store.delete(*keys)
    store.close()


@pytest.fixture
def client(topology):
    return Client(topology)


def audit_row(topology: Topology, request_id: str) -> dict:
    """The audit row of a request, read straight from PostgreSQL."""
    with connect(topology.database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT action, ip, request_id FROM audit_logs WHERE request_id = %s",
            (request_id,),
        )
        rows = cursor.fetchall()
    connection.close()
    assert len(rows) == 1, f"{len(rows)} audit rows for {request_id}\n{topology.logs()}"
    action, ip, stored_id = rows[0]
    return {"action": action, "ip": ip, "request_id": stored_id}


def served_by(topology: Topology, answers: list[Answer]) -> list[str]:
    """The instance that served each answer, from the instances' access logs."""
    names = []
    for answer in answers:
        found = topology.instance_that_served(answer.request_id)
        assert len(found) == 1, f"{answer.request_id} served by {found}\n{topology.logs()}"
        names.append(found[0])
    return names


# --- nginx: HTTPS only, our names only, nginx's own errors in DevLab's shape ----------------


def test_plain_http_is_redirected_to_https_for_good(client):
    answer = client.request("GET", "/notes?page=2", https=False)

    assert answer.status == 301
    assert answer.headers["Location"] == f"https://{HOST}/notes?page=2"
    assert answer.headers["Server"] == "nginx"  # server_tokens off: no version


def test_names_that_are_not_ours_get_no_answer(client):
    with pytest.raises(http.client.RemoteDisconnected):  # 444: the connection is closed
        client.request("GET", "/health", https=False, host="devlab.example.net")
    with pytest.raises(http.client.RemoteDisconnected):
        client.request("GET", "/health", host="devlab.example.net")
    with pytest.raises(ssl.SSLError):  # no certificate handed out for another name
        client.request("GET", "/health", server_name="devlab.example.net")


def test_a_body_over_one_mib_is_refused_by_nginx_in_devlabs_json_shape(client):
    answer = client.request(
        "POST", "/notes", raw=b"x" * (1024 * 1024 + 1), headers={"Content-Type": "text/plain"}
    )

    assert answer.status == 413
    assert answer.body == {
        "code": 413,
        "message": "The request body is larger than 1 MiB.",
        "request_id": answer.request_id,
        "status": "Request Entity Too Large",
    }
    assert NGINX_REQUEST_ID.fullmatch(answer.request_id)
    assert answer.headers["Cache-Control"] == "no-store"
    assert client.topology.instances_tried(answer.request_id) == ["-"]  # no instance saw it


# --- DevLab behind it -------------------------------------------------------------------------


def test_sign_up_and_log_in_over_https_with_nginxs_request_id(client):
    username = unique("ann")

    signup = client.signup(username)
    token = client.token(username)
    me = client.request("GET", "/me", token=token)

    assert me.status == 200
    assert me.body["username"] == username
    assert me.headers["Strict-Transport-Security"] == HSTS
    assert NGINX_REQUEST_ID.fullmatch(signup.request_id)
    assert audit_row(client.topology, signup.request_id)["action"] == "signup"


def test_a_logout_through_one_instance_is_refused_by_the_other(client):
    username = unique("bob")
    client.signup(username)
    token = client.token(username)

    logout = client.request("POST", "/logout", token=token)
    afterwards = [client.request("GET", "/me", token=token) for _ in range(4)]

    assert logout.status == 204
    [logged_out_on] = served_by(client.topology, [logout])
    others = {name for name in served_by(client.topology, afterwards) if name != logged_out_on}
    assert others, "every later request went to the instance that logged out"
    assert [answer.status for answer in afterwards] == [401] * 4
    assert all("revoked" in answer.body["message"] for answer in afterwards)


def test_the_login_rate_limit_is_counted_once_for_both_instances(client, topology):
    """10 logins a minute per address (the default): both instances count in one Redis, so the
    eleventh is refused although each instance saw only about half of them."""
    username = unique("cat")
    Client(topology).signup(username)  # from elsewhere: a signup is not a login

    logins = [client.login(username) for _ in range(10)]
    eleventh = client.login(username)
    forged = client.request(
        "POST", "/login", {"username": username, "password": PASSWORD}, headers=FORGED
    )

    assert [answer.status for answer in logins] == [200] * 10
    served = served_by(topology, logins)
    assert set(served) == {"api1", "api2"}, served
    assert (eleventh.status, forged.status) == (429, 429)
    limited = audit_row(topology, forged.request_id)
    assert (limited["action"], limited["ip"]) == ("rate_limited", client.address)


def test_the_audit_trail_records_the_clients_address_never_the_proxys_nor_a_forged_one(
    client, topology
):
    username = unique("dan")

    plain = client.signup(username)
    forged = client.request(
        "POST", "/login", {"username": username, "password": PASSWORD}, headers=FORGED
    )

    assert forged.status == 200
    assert forged.request_id != FORGED["X-Request-ID"]
    assert NGINX_REQUEST_ID.fullmatch(forged.request_id)
    for answer, action in ((plain, "signup"), (forged, "login_success")):
        row = audit_row(topology, answer.request_id)
        assert row == {"action": action, "ip": client.address, "request_id": answer.request_id}
    assert client.address != "127.0.0.1"  # the proxy's address, as the instances see it


# --- PgBouncer in transaction mode --------------------------------------------------------------


def test_a_lock_wait_through_pgbouncer_ends_as_busy_and_no_connection_keeps_a_timeout(
    client, topology
):
    """lock_timeout reaches PostgreSQL through PgBouncer (SET LOCAL in the transaction), and no
    server connection of PgBouncer's keeps a timeout of DevLab's for its next client."""
    username = unique("eve")
    client.signup(username)
    token = client.token(username)
    note = client.request("POST", "/notes", {"text": "locked"}, token=token).body
    for _ in range(8):  # spread DevLab's transactions over PgBouncer's server connections
        assert client.request("GET", "/notes", token=token).status == 200

    holder = connect(topology.database_url)
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT id FROM notes WHERE id = %s FOR UPDATE", (note["id"],))
        started = time.monotonic()
        patch = client.request("PATCH", f"/notes/{note['id']}", {"text": "x"}, token=token)
        waited = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    session_timeouts = _timeouts_on_every_server_connection(topology)

    assert (patch.status, patch.body["message"]) == (503, DATABASE_BUSY), topology.logs()
    assert waited < 5
    assert session_timeouts == {("0", "0")}


def _timeouts_on_every_server_connection(topology: Topology) -> set[tuple[str, str]]:
    """statement_timeout and lock_timeout as each of PgBouncer's server connections holds them
    outside any transaction of DevLab's: as many clients as the pool has connections each hold
    a transaction open at once, so that each gets a server connection of its own."""
    pool_size = 20  # default_pool_size in deploy/pgbouncer/pgbouncer.ini
    barrier = threading.Barrier(pool_size, timeout=30)
    seen, failures = set(), []

    def look() -> None:
        try:
            connection = connect(topology.pooled_url)
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
                )
                seen.add(cursor.fetchone())
                barrier.wait()  # everybody holds a server connection now
            connection.rollback()
            connection.close()
        except (psycopg2.Error, threading.BrokenBarrierError) as error:
            failures.append(error)

    threads = [threading.Thread(target=look) for _ in range(pool_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    return seen


# --- An instance dies (last: nginx leaves the instance out for fail_timeout, 10 s, after) ------


def test_after_one_instance_is_killed_the_other_answers_every_request(client, topology):
    """SIGKILL to one instance's whole process group, as when its container dies: nginx finds
    its port closed, hands the request to the other instance, and skips the dead one from then
    on (max_fails), without trying it again for each request. The issue allows a 502 for the
    first request after the kill; there is none, because a request whose connection was refused
    never reached the instance, so nginx may send it, even a POST, to the other."""
    username = unique("fay")
    client.signup(username)
    token = client.token(username)
    victim, survivor = topology.instances

    victim.process.kill()
    try:
        _wait_until_refused(victim.port)
        answers = [
            client.request("POST", "/notes", {"text": f"note {n}"}, token=token)
            if n % 2
            else client.request("GET", "/notes", token=token)
            for n in range(12)
        ]
    finally:
        victim.start()
        victim.wait_until_ready()

    assert [answer.status for answer in answers] == [201 if n % 2 else 200 for n in range(12)]
    assert set(served_by(topology, answers)) == {survivor.name}
    tried = [topology.instances_tried(answer.request_id) for answer in answers]
    # Round robin sends the first or the second request to the dead instance; never another.
    went_to_the_dead_one = [n for n, names in enumerate(tried) if names != [survivor.name]]
    assert len(went_to_the_dead_one) == 1 and went_to_the_dead_one[0] <= 1, tried
    assert tried[went_to_the_dead_one[0]] == [victim.name, survivor.name]
    assert client.request("GET", "/notes", token=token).body["total"] == 6


def _wait_until_refused(port: int) -> None:
    """Until the killed instance's workers are gone too and its port refuses connections."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} still accepts connections after SIGKILL")
