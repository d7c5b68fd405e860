"""Every request has an id: in its X-Request-ID header, its error body and its log lines."""

import io
import logging
import re
import uuid
from io import BytesIO

import pytest
from flask.logging import default_handler
from sqlalchemy.engine import make_url

from devlab import passwords
from devlab.db_timeout import BREAKER
from devlab.extensions import db
from devlab.request_id import current_request_id
from tests.conftest import PASSWORD, TEST_DATABASE_URL
from tests.tcp_proxy import TcpProxy

VALID_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
NO_DATABASE = "postgresql://postgres@127.0.0.1:1/devlab"
TRUSTED_ID = "edge-7f3a.req:0042"


def id_of(response) -> str:
    """The response's request id, after checking it, and that an error body repeats it."""
    request_id = response.headers["X-Request-ID"]
    assert VALID_ID.fullmatch(request_id), request_id
    assert response.headers.getlist("X-Request-ID") == [request_id]
    if response.status_code >= 400:
        assert response.mimetype == "application/json"
        assert response.get_json()["request_id"] == request_id
    return request_id


def assert_new_uuid(request_id: str) -> None:
    made = uuid.UUID(request_id)
    assert made.version == 4
    assert str(made) == request_id


@pytest.fixture
def alice(accounts) -> dict:
    return accounts.headers("alice")


# Successes and failures alike: (method, path, body, with alice's token, status).
ANSWERS = [
    ("get", "/", None, False, 200),
    ("get", "/health", None, False, 200),
    ("get", "/openapi.json", None, False, 200),
    ("get", "/docs", None, False, 200),
    ("get", "/docs/assets/swagger-ui.css", None, False, 200),
    ("get", "/favicon.ico", None, False, 200),
    ("post", "/signup", {"username": "bob", "email": "b@x.example", "password": PASSWORD}, 0, 201),
    ("get", "/notes", None, True, 200),
    ("post", "/logout", None, True, 204),
    ("options", "/notes", None, False, 204),
    ("post", "/signup", '{"username": "bob",', False, 400),
    ("get", "/me", None, False, 401),
    ("get", "/audit/logs", None, True, 403),
    ("get", "/no/such/route", None, False, 404),
    ("get", "/admin//users", None, True, 404),
    ("get", "/notes/99", None, True, 404),
    ("put", "/signup", {}, False, 405),
    (
        "post",
        "/signup",
        {"username": "alice", "email": "a@x.example", "password": PASSWORD},
        0,
        409,
    ),
    ("post", "/signup", '{"text": "' + "x" * (1024 * 1024) + '"}', False, 413),
    ("post", "/notes", {"text": 42}, True, 422),
    ("get", "/notes?page=0", None, True, 422),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "with_token", "status"),
    ANSWERS,
    ids=[f"{method}-{path[:20]}-{status}" for method, path, _, _, status in ANSWERS],
)
def test_every_answer_carries_its_request_id(client, alice, method, path, body, with_token, status):
    send = getattr(client, method)
    headers = alice if with_token else {}

    if isinstance(body, str):
        response = send(path, data=body, content_type="application/json", headers=headers)
    else:
        response = send(path, json=body, headers=headers)

    assert response.status_code == status
    assert_new_uuid(id_of(response))


def test_every_request_gets_an_id_of_its_own(client):
    ids = {id_of(client.get("/health")) for _ in range(20)}

    assert len(ids) == 20


def test_without_a_trusted_proxy_an_incoming_id_is_ignored(client):
    response = client.get("/no/such/route", headers={"X-Request-ID": TRUSTED_ID})

    assert_new_uuid(id_of(response))
    assert TRUSTED_ID not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "incoming",
    ["abcdefgh", "x" * 128, TRUSTED_ID, "0.1:2-3_4", str(uuid.uuid4()), "A" * 64],
)
def test_behind_a_trusted_proxy_a_valid_incoming_id_is_kept(app_with, incoming):
    client = app_with(TRUSTED_PROXY_HOPS=1).test_client()

    answered = client.get("/health", headers={"X-Request-ID": incoming})
    refused = client.get("/notes", headers={"X-Request-ID": incoming})

    assert id_of(answered) == incoming
    assert refused.status_code == 401
    assert id_of(refused) == incoming


INVALID_IDS = {
    "empty": "",
    "too-short": "abcdefg",
    "too-long": "x" * 129,
    "far-too-long": "x" * 8000,
    "space": "request 12345",
    "crlf-injection": "abcdefgh\r\nSet-Cookie: session=stolen",
    "lf-injection": "abcdefgh\nX-Forged: 1",
    "trailing-newline": "abcdefgh12\n",
    "log-forgery": "abcdefgh request_id=someone-else",
    "unicode": "r\u00e9quest-12345",
    "unicode-digits": "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",
    "fullwidth-letters": "\uff41\uff42\uff43\uff44\uff45\uff46\uff47\uff48",
    "percent-encoded": "abcdefgh%0d%0a",
    "comma-joined": "abcdefgh,ijklmnop",
    "semicolon": "abcdefgh;ijklmnop",
    "quote": 'abcdefgh"ijklmnop',
    "nul": "abcdefgh\x00",
}


@pytest.mark.parametrize("incoming", INVALID_IDS.values(), ids=INVALID_IDS.keys())
def test_behind_a_trusted_proxy_an_invalid_incoming_id_is_replaced_not_echoed(app_with, incoming):
    client = app_with(TRUSTED_PROXY_HOPS=1).test_client()

    # As a WSGI server would hand it on, whatever a client's library refuses to send.
    response = client.get("/no/such/route", environ_overrides={"HTTP_X_REQUEST_ID": incoming})

    assert_new_uuid(id_of(response))
    if incoming:
        assert incoming not in response.get_data(as_text=True)
        assert all(incoming not in value for _, value in response.headers)


def test_several_x_request_id_headers_are_one_invalid_id(app_with):
    client = app_with(TRUSTED_PROXY_HOPS=1).test_client()
    twice = [("X-Request-ID", "abcdefgh"), ("X-Request-ID", "ijklmnop")]

    response = client.get("/health", headers=twice)

    assert_new_uuid(id_of(response))


def test_the_first_before_request_hook_already_has_the_id(app_with):
    app = app_with()
    seen = []
    app.before_request_funcs.setdefault(None, []).insert(
        0, lambda: seen.append(current_request_id())
    )

    response = app.test_client().get("/health")

    assert seen == [id_of(response)]


def test_current_request_id_is_none_outside_a_request(app):
    assert current_request_id() is None
    with app.app_context():
        assert current_request_id() is None


def test_a_rate_limited_request_carries_its_id_in_the_429(app_with):
    app = app_with(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="1 per minute")
    client = app.test_client()
    login = {"username": "alice", "password": PASSWORD}

    client.post("/login", json=login)
    limited = client.post("/login", json=login)

    assert limited.status_code == 429
    assert_new_uuid(id_of(limited))


def test_an_oversized_chunked_body_refused_by_a_before_request_hook_carries_its_id(client):
    body = b'{"username": "alice", "password": "x"}' + b" " * (1024 * 1024)

    response = client.post(
        "/login",
        input_stream=BytesIO(body),
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )

    assert response.status_code == 413
    assert_new_uuid(id_of(response))


def test_a_database_outage_answers_503_with_its_id(app_with):
    client = app_with(SQLALCHEMY_DATABASE_URI=NO_DATABASE).test_client()

    response = client.post("/login", json={"username": "alice", "password": PASSWORD})

    assert response.status_code == 503
    assert_new_uuid(id_of(response))


@pytest.fixture
def silent_database_app(app_with):
    """An app whose PostgreSQL accepts connections and never answers."""
    target = make_url(TEST_DATABASE_URL)
    with TcpProxy((target.host or "127.0.0.1", target.port or 5432)) as proxy:
        url = target.set(host="127.0.0.1", port=proxy.port)
        app = app_with(SQLALCHEMY_DATABASE_URI=url.render_as_string(hide_password=False))
        proxy.black_hole()
        try:
            yield app
        finally:
            proxy.restore()
            with app.app_context():
                db.engine.dispose()


def test_the_database_breakers_fast_503_carries_its_id(silent_database_app):
    client = silent_database_app.test_client()
    first = client.get("/dbstatus")  # finds PostgreSQL silent, and opens the breaker
    assert silent_database_app.extensions[BREAKER].open

    fast = client.get("/dbstatus")

    assert first.status_code == fast.status_code == 503
    assert id_of(first) != id_of(fast)
    assert_new_uuid(id_of(fast))


def test_a_login_that_finds_the_hashing_queue_full_answers_503_with_its_id(app_with):
    app = app_with(PASSWORD_HASHING_CONCURRENCY=1, GUNICORN_THREADS=2)

    with app.extensions[passwords.BUDGET_KEY].slot():  # the one slot; no queue with 2 threads
        response = app.test_client().post("/login", json={"username": "a", "password": PASSWORD})

    assert response.status_code == 503
    assert (
        response.get_json()["message"]
        == "Too many passwords are being checked at the moment; try again shortly."
    )
    assert_new_uuid(id_of(response))


def test_an_unexpected_failure_answers_500_with_its_id(app_with):
    app = app_with()

    @app.get("/explode")
    def explode():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/explode")

    assert response.status_code == 500
    assert_new_uuid(id_of(response))


def test_an_answer_whose_after_request_hook_fails_still_carries_its_id(app_with):
    """Any hook may fail after the view; the header is added outside every one of them."""
    app = app_with(TESTING=False)  # as in production: Flask answers the failure itself

    @app.after_request
    def fail(_response):
        raise RuntimeError("a hook that breaks")

    response = app.test_client().get("/health")

    assert response.status_code == 500
    assert_new_uuid(id_of(response))


@pytest.fixture
def app_log():
    """What Flask's log handler for the app writes, as under gunicorn (where it writes to
    gunicorn's error log). Its output is captured; its filter and format are the app's."""
    logger = logging.getLogger("devlab")
    # Flask adds its handler only where logging is not configured, which pytest's and
    # Alembic's handlers make it look here.
    attached = default_handler in logger.handlers
    if not attached:
        logger.addHandler(default_handler)
    written = io.StringIO()
    previous = default_handler.setStream(written)
    yield written
    default_handler.setStream(previous)
    if not attached:
        logger.removeHandler(default_handler)


def log_entries(written: io.StringIO) -> list[str]:
    """The first line of each entry (a traceback follows an exception's)."""
    return [line for line in written.getvalue().splitlines() if line.startswith("[")]


def test_every_app_log_line_of_a_request_ends_with_its_id(app_with, app_log):
    app = app_with()

    @app.get("/log-and-fail")
    def log_and_fail():
        app.logger.warning("a line of the app's logger")
        app.logger.getChild("ratelimit").warning("a line of Flask-Limiter's logger")
        raise RuntimeError("secret internals")

    response = app.test_client().get("/log-and-fail")

    request_id = id_of(response)
    entries = log_entries(app_log)
    assert [re.sub(r"^\[[^]]+\] ", "", entry) for entry in entries] == [
        f"WARNING in test_request_id: a line of the app's logger request_id={request_id}",
        f"WARNING in test_request_id: a line of Flask-Limiter's logger request_id={request_id}",
        f"ERROR in errors: Unhandled exception request_id={request_id}",
    ]


def test_a_database_outage_is_logged_with_the_request_id(app_with, app_log):
    client = app_with(SQLALCHEMY_DATABASE_URI=NO_DATABASE, TRUSTED_PROXY_HOPS=1).test_client()

    response = client.get("/dbstatus", headers={"X-Request-ID": TRUSTED_ID})

    assert id_of(response) == TRUSTED_ID
    assert [entry.split("] ", 1)[1] for entry in log_entries(app_log)] == [
        f"WARNING in errors: Database unavailable: OperationalError request_id={TRUSTED_ID}"
    ]


def test_a_log_line_outside_any_request_says_so(app, app_log):
    with app.app_context():
        app.logger.warning("no request here")

    assert log_entries(app_log)[-1].endswith("no request here request_id=-")


def test_the_openapi_document_gives_every_answer_the_header_and_error_bodies_the_id(client):
    document = client.get("/openapi.json").get_json()
    components = document["components"]

    answers = [
        (path, method, status, response)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if method != "parameters"
        for status, response in operation["responses"].items()
    ]
    assert len(answers) > 50
    for path, method, status, response in answers:
        if "$ref" in response:
            response = components["responses"][response["$ref"].rsplit("/", 1)[1]]
        assert response["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/REQUEST_ID"}, (
            path,
            method,
            status,
        )
    header = components["headers"]["REQUEST_ID"]
    assert header["required"] is True
    assert header["schema"] == {"type": "string", "pattern": "^[A-Za-z0-9._:-]{8,128}$"}
    error = components["schemas"]["Error"]
    assert error["properties"]["request_id"]["type"] == "string"
    assert "request_id" in error["required"]
