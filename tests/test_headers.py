"""Hardening headers on every answer, errors included; HSTS on demand; CORS only when allowed."""

import json
import re
from html import unescape as html_unescape

import pytest

from config import ConfigError
from devlab import create_app
from tests.conftest import PASSWORD, TEST_SETTINGS

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
ALLOWED = "https://app.example.com"
HSTS = "max-age=31536000; includeSubDomains"


def assert_hardened(response, policy: str = JSON_POLICY) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Security-Policy"] == policy


def assert_private(response) -> None:
    """Hardened, and never stored by a browser or a proxy."""
    assert_hardened(response)
    assert response.headers["Cache-Control"] == "no-store"


def directives(policy: str) -> dict[str, list[str]]:
    parsed = (directive.split() for directive in policy.split(";"))
    return {name: sources for name, *sources in parsed}


@pytest.fixture
def alice(accounts) -> dict:
    return accounts.headers("alice")


# Successes and failures alike, as (method, path, body, with alice's token, status).
ANSWERS = [
    ("get", "/", None, False, 200),
    ("get", "/health", None, False, 200),
    ("get", "/dbstatus", None, False, 200),
    ("get", "/openapi.json", None, False, 200),
    (
        "post",
        "/signup",
        {"username": "bob", "email": "b@example.com", "password": PASSWORD},
        False,
        201,
    ),
    ("post", "/login", {"username": "alice", "password": PASSWORD}, False, 200),
    ("post", "/login", {"username": "alice", "password": "not the password"}, False, 401),
    ("get", "/me", None, True, 200),
    ("get", "/me", None, False, 401),
    ("post", "/notes", {"text": "a note"}, True, 201),
    ("get", "/notes", None, True, 200),
    ("get", "/notes/99", None, True, 404),
    ("post", "/notes", {"text": 42}, True, 422),
    ("get", "/audit/logs", None, True, 403),
    ("get", "/no/such/route", None, False, 404),
    ("put", "/signup", {}, False, 405),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "with_token", "status"),
    ANSWERS,
    ids=[f"{method}-{path}-{status}" for method, path, _, _, status in ANSWERS],
)
def test_every_api_answer_is_hardened_and_not_stored(
    client, alice, method, path, body, with_token, status
):
    response = getattr(client, method)(path, json=body, headers=alice if with_token else {})

    assert response.status_code == status, response.get_json()
    assert_private(response)
    assert "Strict-Transport-Security" not in response.headers
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_body_over_the_limit_answers_413_with_the_headers(client):
    oversized = '{"text": "' + "x" * (1024 * 1024) + '"}'

    response = client.post("/signup", data=oversized, content_type="application/json")

    assert response.status_code == 413
    assert_private(response)


def test_an_unexpected_failure_answers_500_with_the_headers():
    app = create_app(TEST_SETTINGS)

    @app.get("/explode")
    def explode():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/explode")

    assert response.status_code == 500
    assert_private(response)


def test_a_database_outage_answers_503_with_the_headers():
    app = create_app(
        TEST_SETTINGS | {"SQLALCHEMY_DATABASE_URI": "postgresql://postgres@127.0.0.1:1/devlab"}
    )

    response = app.test_client().post("/login", json={"username": "a", "password": PASSWORD})

    assert response.status_code == 503
    assert_private(response)


def test_the_docs_page_allows_only_its_own_scripts(client):
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    policy = directives(response.headers["Content-Security-Policy"])
    assert_hardened(response, response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert set(policy["connect-src"]) == {"'self'"}
    html = response.get_data(as_text=True)
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, html
    for attributes, inline_code in scripts:
        assert 'src="/' in attributes
        assert inline_code.strip() == ""
    assert 'data-spec-url="/openapi.json"' in html
    # The Authorize dialog's token outlives a reload (Swagger UI keeps it in localStorage).
    assert json.loads(html_unescape(re.search(r"data-config='([^']*)'", html).group(1))) == {
        "persistAuthorization": True
    }
    stylesheets = re.findall(r'<link href="([^"]+)" rel="stylesheet"', html)
    assert "/static/swagger-ui-devlab.css" in stylesheets
    css = client.get("/static/swagger-ui-devlab.css").get_data(as_text=True)
    assert 'label[for^="client_secret"]' in css  # tests/browser checks it hides the field


def test_the_docs_initializer_script_is_served_as_javascript(client):
    src = re.search(r'src="(/static/[^"]+\.js)"', client.get("/docs").get_data(as_text=True))

    response = client.get(src.group(1))

    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert "SwaggerUIBundle(" in response.get_data(as_text=True)
    assert_hardened(response)


@pytest.mark.parametrize("path", ["/docs/assets/swagger-ui.css", "/favicon.ico"])
def test_static_docs_files_keep_their_caching(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert "max-age=86400" in response.headers["Cache-Control"]
    assert_hardened(response)


def test_a_missing_docs_file_is_not_stored(client):
    response = client.get("/docs/assets/no-such-file.js")

    assert response.status_code == 404
    assert_private(response)


@pytest.fixture
def https_client():
    return create_app(TEST_SETTINGS | {"FORCE_HTTPS": True}).test_client()


@pytest.mark.parametrize(
    ("path", "status"), [("/health", 200), ("/me", 401), ("/nowhere", 404), ("/docs", 200)]
)
def test_force_https_sends_hsts_on_every_answer(https_client, path, status):
    response = https_client.get(path)

    assert response.status_code == status
    assert response.headers["Strict-Transport-Security"] == HSTS


@pytest.fixture
def cors_client():
    settings = {"CORS_ORIGINS": f"{ALLOWED}, http://localhost:3000"}
    return create_app(TEST_SETTINGS | settings).test_client()


def preflight(client, path: str, origin: str, method: str = "POST"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_without_cors_origins_no_origin_gets_cors_headers(client):
    simple = client.get("/health", headers={"Origin": ALLOWED})
    checked = preflight(client, "/notes", ALLOWED)

    for response in (simple, checked):
        assert not [name for name, _ in response.headers if name.startswith("Access-Control")]


def test_an_allowed_origin_may_call_the_api_with_a_bearer_token(cors_client):
    response = preflight(cors_client, "/notes", ALLOWED)

    assert response.status_code == 204  # a preflight answer has no body
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type"} <= {h.strip() for h in allowed_headers.split(",")}
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert_private(response)


@pytest.mark.parametrize(
    ("method", "path", "status"), [("get", "/health", 200), ("get", "/me", 401), ("get", "/x", 404)]
)
def test_an_allowed_origin_reads_answers_and_errors_alike(cors_client, method, path, status):
    response = getattr(cors_client, method)(path, headers={"Origin": "http://localhost:3000"})

    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert_private(response)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://app.example.com",
        "https://app.example.com.evil.example",
        "https://app.example.com:8443",
        "null",
    ],
)
def test_other_origins_get_no_cors_headers(cors_client, origin):
    simple = cors_client.get("/health", headers={"Origin": origin})
    checked = preflight(cors_client, "/notes", origin, method="DELETE")

    for response in (simple, checked):
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Methods" not in response.headers


def test_a_request_without_origin_gets_no_cors_headers(cors_client):
    response = cors_client.get("/health")

    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    "origins", ["*", "https://app.example.com/", "app.example.com", "https://*.example.com"]
)
def test_cors_origins_that_are_not_plain_origins_are_refused(origins):
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        create_app(TEST_SETTINGS | {"CORS_ORIGINS": origins})


@pytest.mark.parametrize("origins", [ALLOWED, f"{ALLOWED}, http://localhost:3000"])
@pytest.mark.parametrize(
    ("path", "origin"),
    [
        ("/health", ALLOWED),
        ("/health", "https://evil.example"),
        ("/health", None),
        ("/docs/assets/swagger-ui.css", ALLOWED),  # cached as public, max-age=86400
        ("/docs/assets/swagger-ui.css", None),
        ("/favicon.ico", ALLOWED),
        ("/no/such/route", ALLOWED),
    ],
)
def test_with_cors_on_every_answer_varies_by_origin(origins, path, origin):
    """One origin or several: a cache must not hand one origin's answer to another."""
    client = create_app(TEST_SETTINGS | {"CORS_ORIGINS": origins}).test_client()

    response = client.get(path, headers={"Origin": origin} if origin else {})

    assert "Origin" in response.vary


def test_without_cors_answers_do_not_vary_by_origin(client):
    assert "Origin" not in client.get("/health", headers={"Origin": ALLOWED}).vary


def test_a_204_has_no_content_type(client, accounts):
    headers = accounts.headers("alice")
    note = client.post("/notes", json={"text": "x"}, headers=headers).get_json()

    answers = [
        client.delete(f"/notes/{note['id']}", headers=headers),
        client.options("/notes"),
        client.post("/logout", headers=headers),
    ]

    for response in answers:
        assert response.status_code == 204
        assert "Content-Type" not in response.headers
        assert response.data == b""
