"""Password hashing under load: each worker hashes at most PASSWORD_HASHING_CONCURRENCY passwords
at once, a bounded queue waits for a slot in order, and a request beyond it answers 503.

The apps here are built with the bound they test (the session app hashes without one). Holding
a slot from the test makes requests really queue; hashing is real argon2id at the test costs.
"""

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from argon2 import PasswordHasher

from bench.statements import counting_statements
from config import ConfigError
from devlab import create_app, passwords
from devlab.errors import HASHING_BUSY
from devlab.extensions import db
from tests.conftest import PASSWORD, TEST_SETTINGS, without_request_id

WRONG_PASSWORD = "not the password at all 123"


@pytest.fixture
def bounded(app_with):
    """Make apps with a hashing bound of their own; dispose of them after."""

    def make(concurrency: int = 1, threads: int = 4, wait_seconds: float = 30):
        return app_with(
            PASSWORD_HASHING_CONCURRENCY=concurrency,
            GUNICORN_THREADS=threads,
            PASSWORD_HASHING_WAIT_SECONDS=wait_seconds,
        )

    return make


def budget_of(app) -> passwords.HashingBudget:
    return app.extensions[passwords.BUDGET_KEY]


def login(app, username: str = "alice", password: str = PASSWORD):
    """A login from a client of its own, so that threads can share the app."""
    return app.test_client().post("/login", json={"username": username, "password": password})


def waiting_for_a_slot(budget: passwords.HashingBudget, expected: int) -> int:
    """Wait (at most 10 s) until `expected` requests wait for a hashing slot; return how many do."""
    for _ in range(200):
        if budget.waiting >= expected:
            break
        time.sleep(0.05)
    return budget.waiting


def test_a_worker_hashes_no_more_passwords_at_once_than_the_setting(bounded, accounts, monkeypatch):
    accounts.signup("alice")
    app = bounded(concurrency=2, threads=16)
    lock, in_flight, most = threading.Lock(), [0], [0]
    # Each hash waits for a second one, so the test also shows that two do run at once.
    pairs = threading.Barrier(2, timeout=30)

    def counted(method):
        def run(self, *args):
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            try:
                pairs.wait()
                return method(self, *args)
            finally:
                with lock:
                    in_flight[0] -= 1

        return run

    monkeypatch.setattr(PasswordHasher, "hash", counted(PasswordHasher.hash))
    monkeypatch.setattr(PasswordHasher, "verify", counted(PasswordHasher.verify))
    requests = [
        *[("login", "alice", PASSWORD)] * 3,
        *[("login", "alice", WRONG_PASSWORD)] * 2,
        *[("login", "nobody", WRONG_PASSWORD)] * 2,
        ("signup", "bob", PASSWORD),
    ]

    def send(request):
        route, username, password = request
        body = {"username": username, "password": password}
        if route == "signup":
            body["email"] = f"{username}@example.com"
        return app.test_client().post(f"/{route}", json=body).status_code

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        statuses = list(pool.map(send, requests))

    assert statuses == [200] * 3 + [401] * 4 + [201]
    assert most[0] == 2


@pytest.mark.skipif(sys.platform != "linux", reason="nice values are per thread on Linux only")
def test_passwords_are_hashed_at_a_lower_cpu_priority_than_requests_run(
    bounded, accounts, monkeypatch
):
    """argon2's lane threads start from the hashing thread, and inherit its priority."""
    accounts.signup("alice")
    app = bounded()
    seen = []
    verify = PasswordHasher.verify

    def recording_verify(self, hash, password):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", recording_verify)
    requests_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert login(app).status_code == 200

    assert seen == [min(requests_nice + passwords.HASHING_NICENESS, 19)]


def test_a_login_queued_for_a_hashing_slot_succeeds_once_one_is_free(bounded, accounts):
    accounts.signup("alice")
    app = bounded(concurrency=1, threads=4)
    budget = budget_of(app)

    with ThreadPoolExecutor(max_workers=1) as pool:
        with budget.slot():
            queued = pool.submit(login, app)
            waiting = waiting_for_a_slot(budget, expected=1)
        response = queued.result(timeout=30)

    assert waiting == 1
    assert response.status_code == 200


def test_logins_waiting_for_a_hashing_slot_are_served_in_order_of_arrival(
    bounded, accounts, monkeypatch
):
    accounts.signup("alice")
    app = bounded(concurrency=1, threads=8)
    budget = budget_of(app)
    tried = []
    verify = PasswordHasher.verify

    def recording_verify(self, hash, password):
        tried.append(password)
        return verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", recording_verify)
    guesses = [f"guess {n}" for n in range(5)]

    with ThreadPoolExecutor(max_workers=len(guesses)) as pool:
        with budget.slot():
            answers = []
            for position, guess in enumerate(guesses, start=1):
                answers.append(pool.submit(login, app, "alice", guess))
                waiting_for_a_slot(budget, expected=position)
        statuses = [answer.result(timeout=30).status_code for answer in answers]

    assert statuses == [401] * 5
    assert tried == guesses


def test_a_login_that_finds_the_queue_full_answers_503_at_once(bounded, accounts):
    """With 4 threads and 1 slot, 2 requests may wait: the fourth thread stays free."""
    accounts.signup("alice")
    app = bounded(concurrency=1, threads=4)
    budget = budget_of(app)

    with ThreadPoolExecutor(max_workers=3) as pool:
        with budget.slot():
            queued = [pool.submit(login, app) for _ in range(2)]
            waiting = waiting_for_a_slot(budget, expected=2)
            refused = pool.submit(login, app)
            while not refused.done():
                # Waiting for it would show here, long before its 30 s wait ran out.
                assert budget.waiting == 2
                time.sleep(0.01)
        statuses = [answer.result(timeout=30).status_code for answer in queued]

    assert waiting == 2
    assert refused.result().status_code == 503
    assert statuses == [200, 200]


def test_a_login_refused_because_the_queue_is_full_sends_no_sql(bounded, accounts):
    """In a flood, the logins bound to be refused are refused before the user lookup."""
    accounts.signup("alice")
    app = bounded(concurrency=1, threads=1)  # one thread: nobody may wait for the slot
    with app.app_context():
        engine = db.engine

    with budget_of(app).slot(), counting_statements(engine) as statements:
        response = login(app)

    assert response.status_code == 503
    assert statements == []


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", PASSWORD), ("alice", WRONG_PASSWORD), ("nobody", WRONG_PASSWORD)],
    ids=["right-password", "wrong-password", "unknown-username"],
)
def test_a_login_that_waits_too_long_for_a_hashing_slot_answers_503_with_retry_after(
    bounded, accounts, audit_rows, username, password
):
    """An unknown username queues like a known one, so waiting tells nothing either."""
    accounts.signup("alice")
    app = bounded(concurrency=1, wait_seconds=0.05)

    with budget_of(app).slot():
        response = login(app, username, password)

    assert response.status_code == 503
    assert without_request_id(response) == {
        "code": 503,
        "status": "Service Unavailable",
        "message": HASHING_BUSY,
    }
    assert response.headers["Retry-After"] == "1"
    assert audit_rows("login_failed") == audit_rows("login_success") == []


def test_a_signup_that_finds_no_hashing_slot_answers_503_and_creates_no_account(bounded, client):
    app = bounded(concurrency=1, wait_seconds=0.05)
    account = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}

    with budget_of(app).slot():
        refused = app.test_client().post("/signup", json=account)

    assert refused.status_code == 503
    assert client.post("/signup", json=account).status_code == 201


@pytest.mark.parametrize(("threads", "concurrency"), [(4, 4), (4, 5), (2, 2), (1, 2)])
def test_the_hashing_concurrency_must_leave_a_worker_a_thread_for_other_requests(
    threads, concurrency
):
    settings = {"GUNICORN_THREADS": threads, "PASSWORD_HASHING_CONCURRENCY": concurrency}

    with pytest.raises(ConfigError, match="PASSWORD_HASHING_CONCURRENCY"):
        create_app(TEST_SETTINGS | settings)


@pytest.mark.parametrize(
    ("threads", "concurrency", "queue"), [(4, 1, 2), (4, 3, 0), (16, 2, 13), (1, 1, 0)]
)
def test_hashing_and_waiting_take_at_most_all_threads_but_one(threads, concurrency, queue):
    settings = {"GUNICORN_THREADS": threads, "PASSWORD_HASHING_CONCURRENCY": concurrency}

    budget = budget_of(create_app(TEST_SETTINGS | settings))

    assert (budget.concurrency, budget.queue) == (concurrency, queue)
