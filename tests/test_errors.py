"""Bad input gets a clear JSON error, never HTML, a stack trace or a 500."""

import json
from io import BytesIO

import pytest
from gunicorn.http.errors import InvalidChunkSize

from devlab import create_app
from tests.conftest import PASSWORD, TEST_SETTINGS


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == status
    assert body["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


@pytest.mark.parametrize(
    "body", ['{"username": "alice",', "{'single': 'quotes'}", "\xff\xfe", "nul\x00l"]
)
def test_malformed_json_answers_400(client, body):
    response = client.post("/signup", data=body, content_type="application/json")

    assert_json_error(response, 400)


@pytest.mark.parametrize("body", ["[]", '"a string"', "42", "null"])
def test_json_that_is_not_an_object_answers_422(client, body):
    response = client.post("/signup", data=body, content_type="application/json")

    assert_json_error(response, 422)


def test_wrong_typed_field_answers_422_keyed_by_field(client, accounts):
    headers = accounts.headers("alice")

    response = client.post("/notes", json={"text": 42}, headers=headers)

    body = assert_json_error(response, 422)
    assert body["errors"] == {"json": {"text": ["Not a valid string."]}}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/signup", {"username": "nul\x00byte", "email": "a@example.com", "password": PASSWORD}),
        ("/signup", {"username": "alice", "email": "a@example.com", "password": "pass\x00word"}),
        ("/signup", {"username": "alice", "email": "a@example.com", "password": "\ud800" * 8}),
        ("/login", {"username": "nul\x00byte", "password": PASSWORD}),
        ("/login", {"username": "\udfff", "password": PASSWORD}),
    ],
    ids=["nul-username", "nul-password", "lone-surrogate-password", "nul-login", "surrogate-login"],
)
def test_text_that_postgresql_or_utf8_cannot_hold_answers_422(client, path, body):
    response = client.post(path, json=body)

    assert_json_error(response, 422)


@pytest.mark.parametrize("text", ["nul\x00", "lone \ud83d surrogate"])
def test_unstorable_note_text_answers_422_and_stores_nothing(client, accounts, text):
    headers = accounts.headers("alice")

    response = client.post("/notes", json={"text": text}, headers=headers)

    assert_json_error(response, 422)
    assert client.get("/notes", headers=headers).get_json()["total"] == 0


def test_unknown_route_answers_json_404(client):
    body = assert_json_error(client.get("/no/such/route"), 404)

    assert body["status"] == "Not Found"


def test_wrong_method_answers_json_405_with_allow(client):
    response = client.put("/signup", json={})

    assert_json_error(response, 405)
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/notes", "GET HEAD OPTIONS POST"),
        ("/notes/1", "DELETE GET HEAD OPTIONS PATCH"),
        ("/login", "OPTIONS POST"),
    ],
)
def test_options_answers_204_with_allow_and_no_body(client, path, allowed):
    response = client.options(path)

    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert sorted(response.headers["Allow"].split(", ")) == allowed.split()


def test_body_over_one_mebibyte_answers_413(client):
    oversized = '{"text": "' + "x" * (1024 * 1024) + '"}'

    response = client.post("/signup", data=oversized, content_type="application/json")

    body = assert_json_error(response, 413)
    assert body["message"] == "The request body is larger than 1 MiB."


@pytest.mark.parametrize(
    "query", ["page=0", "page=abc", "page_size=0", "page_size=101", "page=-1", "page=1e3"]
)
def test_pagination_outside_its_bounds_answers_422(client, accounts, query):
    headers = accounts.headers("alice")

    response = client.get(f"/notes?{query}", headers=headers)

    assert_json_error(response, 422)


@pytest.mark.parametrize(
    ("path", "repeated"),
    [
        ("/notes?page=2&page=1", "page"),
        ("/notes?page_size=5&page=1&page_size=5", "page_size"),
        ("/audit/logs?user_id=1&user_id=2", "user_id"),  # `action` alone may repeat
    ],
)
def test_a_query_parameter_given_twice_answers_422(client, accounts, path, repeated):
    headers = accounts.admin_headers("root")

    response = client.get(path, headers=headers)

    body = assert_json_error(response, 422)
    assert body["errors"]["query"] == {repeated: ["Give this parameter only once."]}


def test_a_huge_page_number_is_an_empty_page_not_an_error(client, accounts):
    headers = accounts.headers("alice")

    response = client.get("/notes?page=2147483647&page_size=100", headers=headers)

    assert response.status_code == 200
    assert response.get_json()["notes"] == []


@pytest.mark.parametrize("path", ["/notes/99999999999999999999", "/notes/-1", "/notes/abc"])
def test_ids_that_cannot_exist_answer_404(client, accounts, path):
    headers = accounts.headers("alice")

    assert_json_error(client.get(path, headers=headers), 404)


def test_an_unexpected_failure_answers_json_500_without_details():
    app = create_app(TEST_SETTINGS)

    @app.get("/explode")
    def explode():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/explode")

    body = assert_json_error(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)
    assert body["message"] == "Internal server error."


@pytest.fixture
def client_without_database():
    """An app whose database does not answer: nothing listens on port 1."""
    app = create_app(
        TEST_SETTINGS | {"SQLALCHEMY_DATABASE_URI": "postgresql://postgres@127.0.0.1:1/devlab"}
    )
    return app.test_client()


def test_without_database_health_stays_up_and_dbstatus_answers_503(client_without_database):
    assert client_without_database.get("/health").get_json() == {"status": "ok"}

    response = client_without_database.get("/dbstatus")

    assert_json_error(response, 503)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/login", {"username": "alice", "password": PASSWORD}),
        ("post", "/signup", {"username": "alice", "email": "a@example.com", "password": PASSWORD}),
    ],
)
def test_without_database_routes_that_need_it_answer_503(
    client_without_database, method, path, body
):
    response = getattr(client_without_database, method)(path, json=body)

    body = assert_json_error(response, 503)
    assert "database" in body["message"].lower()


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000 + "]" * 100_000, '{"username": ' + "1" * 5000 + "}"],
    ids=["nested-too-deep", "integer-too-long"],
)
@pytest.mark.parametrize("path", ["/login", "/signup"])
def test_json_python_cannot_read_answers_400(client, path, body):
    response = client.post(path, data=body, content_type="application/json")

    assert_json_error(response, 400)


# What gunicorn hands the app for a chunked request: no length, a stream it terminates.
CHUNKED = {"CONTENT_LENGTH": "", "wsgi.input_terminated": True}


def chunked_post(client, path: str, stream):
    return client.post(
        path, input_stream=stream, content_type="application/json", environ_overrides=CHUNKED
    )


def test_a_chunked_body_over_one_mebibyte_answers_413(client):
    body = b'{"username": "alice", "password": "x"}' + b" " * (1024 * 1024)

    response = chunked_post(client, "/login", BytesIO(body))

    assert assert_json_error(response, 413)["message"] == "The request body is larger than 1 MiB."


def test_a_chunked_body_within_the_limit_is_read_whole(client, accounts):
    accounts.signup("alice")
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()

    response = chunked_post(client, "/login", BytesIO(body + b" " * 1000))

    assert response.status_code == 200


def test_a_chunked_body_whose_framing_breaks_answers_400(client):
    class BrokenChunks(BytesIO):
        def read(self, *args):
            raise InvalidChunkSize(b"ZZ")

    response = chunked_post(client, "/signup", BrokenChunks())

    assert_json_error(response, 400)


@pytest.mark.parametrize(
    "query", ["page=%2B5", "page=1_0", "page=%20%201", "page=%D9%A1", "page_size=%EF%BC%91"]
)
def test_query_numbers_must_be_plain_ascii_digits(client, accounts, query):
    headers = accounts.headers("alice")

    response = client.get(f"/notes?{query}", headers=headers)

    assert_json_error(response, 422)


@pytest.mark.parametrize(
    "path", ["/admin//users", "/notes//", "/audit//logs", "/me//password", "/admin/users//"]
)
def test_doubled_slashes_are_a_json_404_not_a_redirect_built_from_host(client, accounts, path):
    headers = {**accounts.admin_headers("root"), "Host": "evil.example"}

    response = client.get(path, headers=headers)

    body = assert_json_error(response, 404)
    assert body["message"] == "Not found."
    assert "Location" not in response.headers


def test_a_redirect_werkzeug_still_makes_is_json_with_a_relative_location():
    """No route ends in a slash today; one that did would be redirected to, never in HTML."""
    app = create_app(TEST_SETTINGS)
    app.add_url_rule("/with-slash/", "with_slash", lambda: {"ok": True})

    response = app.test_client().get("/with-slash?x=1", headers={"Host": "evil.example"})

    assert_json_error(response, 308)
    assert response.headers["Location"] == "/with-slash/?x=1"


def test_every_404_says_the_same_whether_or_not_a_route_matched(client, accounts):
    alice, bob = accounts.headers("alice"), accounts.headers("bob")
    bobs_note = client.post("/notes", json={"text": "mine"}, headers=bob).get_json()
    admin = accounts.admin_headers("root")

    answers = [
        client.get("/no/such/route"),
        client.get("/notes/999999", headers=alice),
        client.get(f"/notes/{bobs_note['id']}", headers=alice),
        client.patch(f"/notes/{bobs_note['id']}", json={"text": "x"}, headers=alice),
        client.delete(f"/notes/{bobs_note['id']}", headers=alice),
        client.get("/notes/99999999999", headers=alice),
        client.post("/admin/promote/999999", headers=admin),
        client.post("/admin/users/999999/deactivate", headers=admin),
    ]

    assert {(r.status_code, r.get_json()["message"]) for r in answers} == {(404, "Not found.")}


@pytest.mark.parametrize(
    "query", ["PAGE=1", "page=1&pagesize=5", "page=1&x=", "sort=newest", "page%00=1"]
)
def test_unknown_query_parameters_answer_422_like_unknown_body_fields(client, accounts, query):
    headers = accounts.admin_headers("root")

    for path in ("/notes", "/admin/users", "/audit/logs"):
        body = assert_json_error(client.get(f"{path}?{query}", headers=headers), 422)
        assert "query" in body["errors"]


def test_known_query_parameters_still_work(client, accounts):
    response = client.get("/notes?page=1&page_size=5", headers=accounts.headers("alice"))

    assert response.status_code == 200


def test_the_openapi_document_says_unknown_parameters_are_refused(client):
    description = client.get("/openapi.json").get_json()["info"]["description"]

    assert "does not list is refused with 422" in description


SECRET = "hunter2-Secret-Canary"


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"username": "alice", "password": SECRET}),
        json.dumps([SECRET]),
        SECRET,
        f"{SECRET}&username=alice",
    ],
    ids=["json-object", "json-list", "bare-word", "word-then-pair"],
)
def test_a_form_body_that_is_not_form_data_is_a_400_that_says_send_json(client, body):
    response = client.post("/login", data=body, content_type="application/x-www-form-urlencoded")

    body = assert_json_error(response, 400)
    assert "send JSON" in body["message"]
    assert SECRET not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", f'{{"username": "a", "password": "x={SECRET}"}}'),
        ("application/x-www-form-urlencoded", f"username=a&password=b&{SECRET}%20x=1"),
        ("application/x-www-form-urlencoded", f"username=a&password=b&{'k' * 65}{SECRET}=1"),
        ("application/json", json.dumps({"username": "a", "password": "b", f"{SECRET}!": 1})),
        ("application/json", json.dumps({"username": "a", "password": "b", SECRET * 4: 1})),
    ],
    ids=["json-with-equals-sign", "space-in-name", "long-name", "json-punctuation", "json-long"],
)
def test_an_unknown_field_whose_name_is_no_identifier_is_reported_without_it(
    client, content_type, body
):
    response = client.post("/login", data=body, content_type=content_type)

    errors = assert_json_error(response, 422)["errors"]
    [fields] = errors.values()
    assert "_unnamed" in fields
    assert SECRET not in response.get_data(as_text=True)


def test_an_unknown_field_with_an_ordinary_name_is_still_named(client):
    response = client.post("/login", json={"username": "a", "password": "b", "remember_me": 1})

    assert assert_json_error(response, 422)["errors"] == {
        "json_or_form": {"remember_me": ["Unknown field."]}
    }


def test_json_bodies_keep_sorted_keys_and_even_write_what_orjson_refuses(app):
    assert app.json.dumps({"b": 1, "a": "ü"}) == '{"a":"ü","b":1}'
    assert app.json.loads(app.json.dumps({"text": "lone \ud83d surrogate"})) == {
        "text": "lone \ud83d surrogate"
    }
