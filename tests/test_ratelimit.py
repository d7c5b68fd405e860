"""Rate limits: who is counted, what a limited client gets, and where the counts live.

The session app runs with limits off; each test here makes an app of its own with them on.
"""

import ipaddress
import itertools
import json
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from config import Config, ConfigError
from devlab import create_app, passwords
from devlab.audit.trail import pseudonym
from devlab.ratelimit import limiter
from tests.conftest import PASSWORD, TEST_REDIS_URL, TEST_SETTINGS
from tests.servers import free_port, gunicorn_serving

WRONG_PASSWORD = "not the password at all 123"
# One hashing slot, and room in its queue for a moment's wait: a request queues, then answers 503.
ONE_SLOT_SHORT_WAIT = {
    "GUNICORN_THREADS": 4,
    "PASSWORD_HASHING_CONCURRENCY": 1,
    "PASSWORD_HASHING_WAIT_SECONDS": 0.05,
}


@pytest.fixture
def limited(app_with):
    """Make apps with rate limits on (in memory unless told otherwise); dispose of them after."""
    return lambda **settings: app_with(**({"RATELIMIT_ENABLED": True} | settings))


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as error:
        pytest.fail(
            f"Redis is not reachable at {TEST_REDIS_URL} ({error}); start it or set TEST_REDIS_URL."
        )
    yield client
    client.close()


def forget(redis_client, *marks: str) -> None:
    """Delete the counts whose keys hold one of `marks`, all unique to one test."""
    for mark in marks:
        for key in redis_client.scan_iter(match=f"*{mark}*"):
            redis_client.delete(key)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def login(client, username: str = "alice", password: str = PASSWORD, address: str = "127.0.0.1"):
    return client.post(
        "/login",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def signup(client, username: str):
    return client.post(
        "/signup",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )


def unique_address() -> str:
    """An address of the benchmarking range (198.18.0.0/15) that no other test run uses."""
    return str(ipaddress.ip_address("198.18.0.0") + uuid.uuid4().int % 2**17)


def test_every_limit_sits_on_its_route_so_unlimited_routes_skip_the_limiter(limited):
    """Flask-Limiter's check before every request looks only for default and application
    limits; DevLab has none, and each limited route's decorator checks its own (the tests
    below), so that check is left out (devlab/ratelimit.py says what it cost)."""
    app = limited()

    with app.app_context():
        assert limiter.limit_manager.default_limits == []
        assert limiter.limit_manager.application_limits == []
    assert limiter._check_request_limit not in app.before_request_funcs[None]
    assert app.test_client().get("/health").status_code == 200


# --- what a limited client gets -----------------------------------------------------------


def test_logins_over_the_address_limit_answer_429_with_retry_after(limited, accounts):
    client = limited(RATELIMIT_LOGIN="3 per minute").test_client()
    accounts.signup("alice")
    allowed = [login(client).status_code for _ in range(3)]

    response = login(client)

    assert allowed == [200, 200, 200]
    assert response.status_code == 429
    assert response.is_json
    body = response.get_json()
    assert (body["code"], body["status"]) == (429, "Too Many Requests")
    assert body["message"].startswith("Too many login attempts from your address; try again in")
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_the_login_limit_counts_each_client_address_separately(limited, accounts):
    client = limited(RATELIMIT_LOGIN="2 per minute").test_client()
    accounts.signup("alice")
    for _ in range(2):
        login(client, address="203.0.113.1")

    assert login(client, address="203.0.113.1").status_code == 429
    assert login(client, address="203.0.113.2").status_code == 200


def test_ipv6_clients_count_by_their_64_network(limited, accounts):
    client = limited(RATELIMIT_LOGIN="2 per minute").test_client()
    accounts.signup("alice")
    login(client, address="2001:db8:0:1::1")
    login(client, address="2001:db8:0:1::2")

    assert login(client, address="2001:db8:0:1::3").status_code == 429
    assert login(client, address="2001:db8:0:2::1").status_code == 200


def test_a_login_the_api_refuses_to_read_still_counts_toward_the_address_limit(limited, accounts):
    client = limited(RATELIMIT_LOGIN="2 per minute").test_client()
    accounts.signup("alice")
    refused = [client.post("/login", json={"username": "alice"}).status_code for _ in range(2)]

    response = login(client)

    assert refused == [422, 422]
    assert response.status_code == 429


def test_an_oversized_login_answers_413_and_leaves_the_limiter_alone(limited, caplog):
    client = limited().test_client()

    response = client.post("/login", json={"username": "x" * 1024 * 1024, "password": "x"})

    assert response.status_code == 413
    assert [record.getMessage() for record in caplog.records] == []


def test_failed_logins_are_limited_per_username_from_any_address_in_any_case(limited, accounts):
    client = limited(RATELIMIT_LOGIN_FAILURES="2 per 15 minutes").test_client()
    accounts.signup("alice")
    accounts.signup("bob")
    first = login(client, "alice", WRONG_PASSWORD, address="203.0.113.1")
    second = client.post(  # a form post, as OAuth2 clients send
        "/login",
        data={"username": "ALICE", "password": WRONG_PASSWORD, "grant_type": "password"},
        environ_base={"REMOTE_ADDR": "203.0.113.2"},
    )

    response = login(client, "Alice", PASSWORD, address="203.0.113.3")

    assert [first.status_code, second.status_code] == [401, 401]
    assert response.status_code == 429
    assert response.get_json()["message"].startswith("Too many failed logins for this username")
    assert int(response.headers["Retry-After"]) > 60
    assert login(client, "bob", address="203.0.113.3").status_code == 200


def test_successful_logins_do_not_count_as_failed_ones(limited, accounts):
    client = limited(RATELIMIT_LOGIN_FAILURES="2 per 15 minutes").test_client()
    accounts.signup("alice")
    successes = [login(client).status_code for _ in range(4)]
    failures = [login(client, password=WRONG_PASSWORD).status_code for _ in range(2)]

    response = login(client)

    assert successes == [200] * 4
    assert failures == [401, 401]
    assert response.status_code == 429


def test_a_login_refused_for_want_of_a_hashing_slot_is_no_failed_attempt(limited, accounts):
    limited_app = limited(RATELIMIT_LOGIN_FAILURES="1 per 15 minutes", **ONE_SLOT_SHORT_WAIT)
    client = limited_app.test_client()
    accounts.signup("alice")

    with limited_app.extensions[passwords.BUDGET_KEY].slot():
        refused = [login(client, password=WRONG_PASSWORD).status_code for _ in range(3)]

    assert refused == [503] * 3
    assert login(client, password=WRONG_PASSWORD).status_code == 401
    assert login(client, password=WRONG_PASSWORD).status_code == 429


def test_signups_over_the_address_limit_answer_429_and_create_no_account(limited, client):
    limited_client = limited(RATELIMIT_SIGNUP="2 per minute").test_client()

    answers = [signup(limited_client, name).status_code for name in ("alice", "bob", "carol")]

    assert answers == [201, 201, 429]
    assert login(client, "carol").status_code == 401


def test_refreshes_over_the_address_limit_answer_429_with_retry_after(limited, accounts):
    client = limited(RATELIMIT_REFRESH="2 per minute").test_client()
    accounts.signup("alice")
    refresh_token = login(client).get_json()["refresh_token"]
    allowed = []
    for _ in range(2):
        response = client.post("/token/refresh", headers=bearer(refresh_token))
        allowed.append(response.status_code)
        refresh_token = response.get_json()["refresh_token"]

    response = client.post("/token/refresh", headers=bearer(refresh_token))

    assert allowed == [200, 200]
    assert response.status_code == 429
    assert response.get_json()["message"].startswith("Too many token refreshes from your address")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    other_address = {"REMOTE_ADDR": "203.0.113.9"}
    retried = client.post(
        "/token/refresh", headers=bearer(refresh_token), environ_base=other_address
    )
    assert retried.status_code == 200  # the refresh token was not spent by the 429


def test_password_changes_over_the_address_limit_answer_429_and_change_nothing(
    limited, accounts, audit_rows
):
    client = limited(RATELIMIT_PASSWORD="2 per minute").test_client()
    accounts.signup("alice")
    headers = bearer(login(client).get_json()["access_token"])
    wrong = {"current_password": WRONG_PASSWORD, "new_password": "a new passphrase"}
    guesses = [
        client.post("/me/password", json=wrong, headers=headers).status_code for _ in range(2)
    ]

    right = {"current_password": PASSWORD, "new_password": "a new passphrase"}
    response = client.post("/me/password", json=right, headers=headers)

    assert guesses == [401, 401]
    assert response.status_code == 429
    assert response.get_json()["message"].startswith("Too many password checks")
    assert login(client).status_code == 200  # the old password still works
    (row,) = audit_rows("rate_limited")
    assert row.detail == "password limit (2 per 1 minute) for 127.0.0.1"


# --- the audit trail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "username", "detail"),
    [
        (
            {"RATELIMIT_LOGIN": "1 per minute"},
            "mallory",
            "login limit (1 per 1 minute) for 127.0.0.1",
        ),
        (
            {"RATELIMIT_LOGIN_FAILURES": "1 per 15 minutes"},
            "alice",
            "login-failures limit (1 per 15 minute) for user {alice_id}",
        ),
        (
            {"RATELIMIT_LOGIN_FAILURES": "1 per 15 minutes"},
            "mallory",
            "login-failures limit (1 per 15 minute) for unknown username {pseudonym}",
        ),
    ],
    ids=["per-address", "failures-of-an-account", "failures-of-no-account"],
)
def test_a_limited_request_leaves_an_audit_row_naming_the_limit(
    limited, accounts, audit_rows, settings, username, detail
):
    limited_app = limited(**settings)
    client = limited_app.test_client()
    alice = accounts.signup("alice")
    login(client, username, WRONG_PASSWORD)

    response = login(client, username.capitalize(), WRONG_PASSWORD)

    assert response.status_code == 429
    (row,) = audit_rows("rate_limited")
    with limited_app.app_context():
        assert row.detail == detail.format(pseudonym=pseudonym(username), alice_id=alice["id"])
    assert (row.user_id, row.ip, row.method, row.path, row.status_code) == (
        None,
        "127.0.0.1",
        "POST",
        "/login",
        429,
    )
    # The limited request tried no password.
    assert len(audit_rows("login_failed")) == 1


# --- turning limits off, settings, documentation ------------------------------------------


def test_ratelimit_enabled_0_turns_every_limit_off_in_that_app_only(limited, accounts):
    tight = {"RATELIMIT_LOGIN": "1 per minute", "RATELIMIT_SIGNUP": "1 per minute"}
    on = limited(**tight).test_client()
    off = limited(**tight, RATELIMIT_ENABLED=False).test_client()  # made after the other one

    signups = [signup(off, name).status_code for name in ("alice", "bob", "carol")]
    logins = [login(off).status_code for _ in range(3)]

    assert signups == [201, 201, 201]
    assert logins == [200, 200, 200]
    assert [login(on).status_code for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("RATELIMIT_LOGIN", "ten per minute"),
        ("RATELIMIT_LOGIN_FAILURES", ""),
        ("RATELIMIT_SIGNUP", "10 per fortnight"),
        ("RATELIMIT_STORAGE_URI", "memcached://127.0.0.1:11211"),
        ("RATELIMIT_STORAGE_URI", "127.0.0.1:6379"),
    ],
)
def test_the_app_refuses_an_unusable_rate_limit_setting(setting, value):
    with pytest.raises(ConfigError, match=setting):
        create_app(TEST_SETTINGS | {setting: value})


def test_a_refused_storage_uri_is_not_repeated_since_it_may_hold_a_password():
    with pytest.raises(ConfigError) as refused:
        create_app(TEST_SETTINGS | {"RATELIMIT_STORAGE_URI": "redis//:s3cret-pw@redis:6379"})

    assert "s3cret-pw" not in str(refused.value)


@pytest.mark.parametrize("path", ["/login", "/signup"])
def test_limited_routes_document_429_with_retry_after(client, path):
    spec = client.get("/openapi.json").get_json()

    documented = spec["paths"][path]["post"]["responses"]["429"]

    assert "Retry-After" in documented["headers"]
    schema = documented["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Error"}


# --- Redis ---------------------------------------------------------------------------------


def test_counts_live_in_redis_when_a_storage_uri_is_set(app, limited, accounts, redis_client):
    prefix = f"devlab-test-{uuid.uuid4().hex}"
    limited_app = limited(
        RATELIMIT_STORAGE_URI=TEST_REDIS_URL,
        RATELIMIT_STORAGE_OPTIONS=Config.RATELIMIT_STORAGE_OPTIONS | {"key_prefix": prefix},
        RATELIMIT_LOGIN="2 per minute",
    )
    client = limited_app.test_client()
    accounts.signup("alice")
    try:
        allowed = [login(client, password=WRONG_PASSWORD).status_code for _ in range(2)]

        response = login(client)

        keys = set(redis_client.scan_iter(match=f"{prefix}:*"))
    finally:
        forget(redis_client, prefix)
    assert allowed == [401, 401]
    assert response.status_code == 429
    with app.app_context():
        alice = pseudonym("alice")
    assert keys == {
        f"{prefix}:LIMITER/127.0.0.1/login/2/1/minute",
        f"{prefix}:login-failures/5/900/{alice}",  # no username in Redis, only its pseudonym
    }


def post(base: str, path: str, body: dict, address: str | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if address:
        request.add_header("X-Forwarded-For", address)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def serving(log: Path, **settings: str):
    """One gunicorn worker, so that two servers are two processes with a count each."""
    return gunicorn_serving(log, WEB_CONCURRENCY="1", **settings)


@pytest.mark.parametrize(
    "settings",
    [
        {"RATELIMIT_LOGIN": "4 per minute", "RATELIMIT_LOGIN_FAILURES": "100 per 15 minutes"},
        {"RATELIMIT_LOGIN": "100 per minute", "RATELIMIT_LOGIN_FAILURES": "4 per 15 minutes"},
    ],
    ids=["per-address", "failures-per-username"],
)
def test_two_servers_on_one_redis_share_one_limit(app, tmp_path, redis_client, settings):
    address, username = unique_address(), f"nobody-{uuid.uuid4().hex}"
    attempt = {"username": username, "password": WRONG_PASSWORD}
    # Replicas share their JWT key (each must verify the others' tokens), hence pseudonyms.
    shared = settings | {
        "RATELIMIT_STORAGE_URI": TEST_REDIS_URL,
        "TRUSTED_PROXY_HOPS": "1",
        "JWT_SECRET_KEY": TEST_SETTINGS["JWT_SECRET_KEY"],
    }
    try:
        with (
            serving(tmp_path / "a.log", **shared) as one,
            serving(tmp_path / "b.log", **shared) as other,
        ):
            split = [post(base, "/login", attempt, address)[0] for base in (one, other) * 2]

            over = [post(base, "/login", attempt, address)[0] for base in (one, other)]
    finally:
        with app.app_context():
            forget(redis_client, address, pseudonym(username))

    assert split == [401] * 4
    assert over == [429, 429]


def test_an_unreachable_redis_is_logged_once_and_requests_are_still_served(tmp_path):
    log = tmp_path / "gunicorn.log"
    closed_port = free_port()
    credentials = {"username": "alice", "password": PASSWORD}
    account = credentials | {"email": "alice@example.com"}
    with serving(
        log,
        RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{closed_port}/0",
        RATELIMIT_LOGIN="3 per minute",
    ) as base:
        served = [post(base, "/signup", account)[0]]
        served += [post(base, "/login", credentials)[0] for _ in range(3)]

        # Meanwhile the process counts in its own memory, so its limits still hold.
        over = post(base, "/login", credentials)[0]

    assert served == [201, 200, 200, 200]
    assert over == 429
    written = log.read_text()
    warnings = [line for line in written.splitlines() if "rate limit storage unreachable" in line]
    assert len(warnings) == 1, written
    assert "WARNING" in warnings[0]
    assert "Traceback" not in written


# --- limits a client cannot switch off or outrun (budgets reserved before the work) -------

ODD_JSON_VALUES = [
    "\ud800",  # a lone surrogate, which no Redis key can hold
    "\udfff\ud800",
    "nul\x00",
    "x" * 10_240,
    "",
    42,
    -1.5,
    True,
    None,
    ["alice"],
    {"name": "alice"},
]


@pytest.fixture
def redis_limited(limited, redis_client):
    """Make apps that count in Redis under a prefix of their own; delete its keys after."""
    prefixes = []

    def make(**settings):
        prefix = f"devlab-test-{uuid.uuid4().hex}"
        prefixes.append(prefix)
        options = Config.RATELIMIT_STORAGE_OPTIONS | {"key_prefix": prefix}
        return limited(
            RATELIMIT_STORAGE_URI=TEST_REDIS_URL, RATELIMIT_STORAGE_OPTIONS=options, **settings
        )

    yield make
    forget(redis_client, *prefixes)


@pytest.mark.parametrize("field", ["username", "password"])
def test_no_odd_value_in_a_login_body_unlocks_a_locked_account(
    redis_limited, accounts, caplog, field
):
    client = redis_limited(RATELIMIT_LOGIN_FAILURES="3 per 15 minutes").test_client()
    accounts.signup("alice")
    failures = [login(client, password=WRONG_PASSWORD).status_code for _ in range(3)]
    assert failures == [401, 401, 401]

    answers = []
    for value in ODD_JSON_VALUES:
        body = {"username": "alice", "password": PASSWORD} | {field: value}
        odd = client.post("/login", data=json.dumps(body), content_type="application/json")
        answers.append(odd.status_code)
        # Between the odd ones, the right password is still locked out, and so is a guess.
        assert login(client).status_code == 429
        assert login(client, password=WRONG_PASSWORD).status_code == 429

    assert set(answers) <= {422, 429}
    logged = [record.getMessage() for record in caplog.records]
    assert not [line for line in logged if "storage unreachable" in line], logged


def test_a_lone_surrogate_username_is_a_422_and_counts_nothing_per_username(
    redis_limited, redis_client
):
    limited_app = redis_limited()
    client = limited_app.test_client()

    response = client.post(
        "/login", data='{"username": "\\ud800", "password": "x"}', content_type="application/json"
    )

    assert response.status_code == 422
    prefix = limited_app.config["RATELIMIT_STORAGE_OPTIONS"]["key_prefix"]
    assert not list(redis_client.scan_iter(match=f"{prefix}:login-failures*"))


def test_an_unreachable_redis_falls_back_for_failed_logins_too(tmp_path):
    log = tmp_path / "gunicorn.log"
    credentials = {"username": "alice", "password": PASSWORD}
    wrong = credentials | {"password": WRONG_PASSWORD}
    with serving(
        log,
        RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0",
        RATELIMIT_LOGIN_FAILURES="2 per 15 minutes",
    ) as base:
        post(base, "/signup", credentials | {"email": "alice@example.com"})
        served = [post(base, "/login", wrong)[0] for _ in range(2)]

        over = post(base, "/login", credentials)[0]

    assert served == [401, 401]
    assert over == 429
    written = log.read_text()
    assert written.count("rate limit storage unreachable") == 1, written
    assert "Traceback" not in written


def concurrent_logins(base: str, attempts: list[dict]) -> list[int]:
    """Send every attempt at once, each from an address of its own."""
    ready = threading.Barrier(len(attempts))

    def send(attempt):
        ready.wait(timeout=30)
        return post(base, "/login", attempt, unique_address())[0]

    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        return list(pool.map(send, attempts))


@pytest.mark.parametrize("burst", [20, 50])
def test_a_burst_of_wrong_passwords_checks_no_more_than_the_limit(
    app, tmp_path, redis_client, audit_rows, burst
):
    username = f"victim-{uuid.uuid4().hex[:8]}"
    settings = {
        "RATELIMIT_STORAGE_URI": TEST_REDIS_URL,
        "TRUSTED_PROXY_HOPS": "1",
        "RATELIMIT_LOGIN": "1000 per minute",
        "RATELIMIT_SIGNUP": "1000 per minute",  # the suite may run again within the window
        "JWT_SECRET_KEY": TEST_SETTINGS["JWT_SECRET_KEY"],
        # The five checks the limit lets through may all reach one worker: room to queue them.
        "GUNICORN_THREADS": "8",
    }
    try:
        with gunicorn_serving(tmp_path / "server.log", **settings) as base:
            account = {"username": username, "email": f"{username}@example.com"}
            assert post(base, "/signup", account | {"password": PASSWORD})[0] == 201
            guesses = [{"username": username, "password": f"guess {n}"} for n in range(burst)]

            statuses = concurrent_logins(base, guesses)
    finally:
        with app.app_context():
            forget(redis_client, pseudonym(username))

    assert statuses.count(401) == 5, statuses  # RATELIMIT_LOGIN_FAILURES: 5 per 15 minutes
    assert statuses.count(429) == burst - 5
    assert len(audit_rows("login_failed")) == 5


def test_a_burst_of_wrong_passwords_around_the_right_one_checks_no_more_wrong_ones_than_the_limit(
    app, tmp_path, redis_client, burst=50
):
    username = f"victim-{uuid.uuid4().hex[:8]}"
    settings = {
        "RATELIMIT_STORAGE_URI": TEST_REDIS_URL,
        "TRUSTED_PROXY_HOPS": "1",
        "RATELIMIT_LOGIN": "1000 per minute",
        "RATELIMIT_SIGNUP": "1000 per minute",  # the suite may run again within the window
        "JWT_SECRET_KEY": TEST_SETTINGS["JWT_SECRET_KEY"],
        # The five checks the limit lets through may all reach one worker: room to queue them.
        "GUNICORN_THREADS": "8",
    }
    try:
        with gunicorn_serving(tmp_path / "server.log", **settings) as base:
            account = {"username": username, "email": f"{username}@example.com"}
            assert post(base, "/signup", account | {"password": PASSWORD})[0] == 201
            attempts = [{"username": username, "password": f"guess {n}"} for n in range(burst)]
            attempts[burst // 2] = {"username": username, "password": PASSWORD}

            statuses = concurrent_logins(base, attempts)
    finally:
        with app.app_context():
            forget(redis_client, pseudonym(username))

    # A success gives its slot back, so one more wrong password may follow it: what the limit
    # holds is the number of wrong passwords checked, whenever the right one came.
    assert statuses.count(401) <= 5, statuses
    assert statuses.count(200) <= 1, statuses
    assert statuses.count(429) == burst - statuses.count(401) - statuses.count(200), statuses


def test_a_successful_login_gives_its_reserved_slot_back(redis_limited, accounts):
    client = redis_limited(
        RATELIMIT_LOGIN_FAILURES="2 per 15 minutes", RATELIMIT_LOGIN="100 per minute"
    ).test_client()
    accounts.signup("alice")

    answers = [login(client).status_code for _ in range(10)]
    answers += [login(client, password=WRONG_PASSWORD).status_code for _ in range(3)]

    assert answers == [200] * 10 + [401, 401, 429]


def change_password(client, headers, current: str, address: str):
    return client.post(
        "/me/password",
        json={"current_password": current, "new_password": "a brand new passphrase"},
        headers=headers,
        environ_base={"REMOTE_ADDR": address},
    )


def test_wrong_current_passwords_are_limited_per_account_from_any_address(
    redis_limited, accounts, audit_rows
):
    client = redis_limited(RATELIMIT_PASSWORD="100 per minute").test_client()
    alice = accounts.signup("alice")
    accounts.signup("bob")
    headers = bearer(login(client).get_json()["access_token"])
    bobs_headers = bearer(login(client, "bob").get_json()["access_token"])
    addresses = [f"203.0.113.{n}" for n in range(1, 8)]

    guesses = [change_password(client, headers, WRONG_PASSWORD, a).status_code for a in addresses]

    assert guesses == [401] * 5 + [429] * 2  # RATELIMIT_PASSWORD_FAILURES: 5 per 15 minutes
    assert change_password(client, headers, PASSWORD, "203.0.113.99").status_code == 429
    assert login(client).status_code == 200  # the password did not change
    assert change_password(client, bobs_headers, PASSWORD, "203.0.113.1").status_code == 204
    row = audit_rows("rate_limited")[0]
    assert row.detail == f"password-failures limit (5 per 15 minute) for user {alice['id']}"


def test_right_current_passwords_do_not_count_as_failures(redis_limited, accounts):
    client = redis_limited(RATELIMIT_PASSWORD_FAILURES="1 per 15 minutes").test_client()
    accounts.signup("alice")
    headers = bearer(login(client).get_json()["access_token"])
    passwords = [PASSWORD, "a brand new passphrase"] * 3

    for current, new in itertools.pairwise(passwords):
        response = client.post(
            "/me/password", json={"current_password": current, "new_password": new}, headers=headers
        )
        assert response.status_code == 204


def test_a_password_change_refused_for_want_of_a_hashing_slot_is_no_wrong_password(
    limited, accounts
):
    limited_app = limited(RATELIMIT_PASSWORD_FAILURES="1 per 15 minutes", **ONE_SLOT_SHORT_WAIT)
    client = limited_app.test_client()
    accounts.signup("alice")
    headers = bearer(login(client).get_json()["access_token"])

    with limited_app.extensions[passwords.BUDGET_KEY].slot():
        refused = [
            change_password(client, headers, WRONG_PASSWORD, "203.0.113.1").status_code
            for _ in range(3)
        ]

    assert refused == [503] * 3
    assert change_password(client, headers, WRONG_PASSWORD, "203.0.113.1").status_code == 401
    assert change_password(client, headers, PASSWORD, "203.0.113.1").status_code == 429


def test_note_writes_are_limited_per_user(redis_limited, accounts, audit_rows):
    client = redis_limited(RATELIMIT_NOTES_WRITE="3 per minute").test_client()
    alice = accounts.signup("alice")
    accounts.signup("bob")
    alices = bearer(login(client).get_json()["access_token"])
    bobs = bearer(login(client, "bob").get_json()["access_token"])
    note = client.post("/notes", json={"text": "one"}, headers=alices).get_json()

    writes = [
        client.patch(f"/notes/{note['id']}", json={"text": "two"}, headers=alices).status_code,
        client.post("/notes", json={"text": "three"}, headers=alices).status_code,
        client.post("/notes", json={"text": "four"}, headers=alices).status_code,
        client.patch(f"/notes/{note['id']}", json={"text": "five"}, headers=alices).status_code,
    ]

    assert writes == [200, 201, 429, 429]
    response = client.post("/notes", json={"text": "x"}, headers=alices)
    assert int(response.headers["Retry-After"]) <= 60
    assert response.get_json()["message"].startswith("Too many note writes")
    assert client.get("/notes", headers=alices).get_json()["total"] == 2  # reads are not limited
    assert client.post("/notes", json={"text": "bob's"}, headers=bobs).status_code == 201
    row = audit_rows("rate_limited")[0]
    assert row.detail == f"note-writes limit (3 per 1 minute) for user {alice['id']}"


def test_note_writes_document_their_429(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    for path, method in [("/notes", "post"), ("/notes/{note_id}", "patch")]:
        assert "Retry-After" in paths[path][method]["responses"]["429"]["headers"]


@pytest.mark.parametrize(
    ("setting", "default"),
    [
        ("RATELIMIT_LOGIN_FAILURES", "5 per 15 minutes"),
        ("RATELIMIT_PASSWORD_FAILURES", "5 per 15 minutes"),
        ("RATELIMIT_NOTES_WRITE", "120 per minute"),
    ],
)
def test_account_budgets_default_to_the_documented_rates(setting, default):
    assert getattr(Config, setting) == default
