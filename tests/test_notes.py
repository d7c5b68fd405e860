"""Notes over HTTP: each user writes, lists, reads, changes and deletes only their own."""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from devlab import create_app
from devlab.extensions import db
from tests.conftest import TEST_SETTINGS, without_request_id
from tests.locks import holding_lock

NOTE_FIELDS = {"id", "text", "created_at", "updated_at", "owner_id"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def write_note(client, headers: dict, text: str = "a note") -> dict:
    response = client.post("/notes", json={"text": text}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def list_notes(client, headers: dict, query: str = "") -> dict:
    response = client.get(f"/notes{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# --- writing a note ---------------------------------------------------------------------------


def test_writing_a_note_answers_201_with_the_note(client, accounts):
    user = accounts.signup("alice")
    headers = bearer(accounts.token("alice"))

    response = client.post("/notes", json={"text": "buy milk"}, headers=headers)

    assert response.status_code == 201
    note = response.get_json()
    assert set(note) == NOTE_FIELDS
    assert note["text"] == "buy milk"
    assert note["owner_id"] == user["id"]
    assert isinstance(note["id"], int)
    assert datetime.fromisoformat(note["created_at"]).tzinfo is not None
    assert datetime.fromisoformat(note["updated_at"]).tzinfo is not None


def test_a_written_note_can_be_read_back(client, accounts):
    headers = accounts.headers("alice")
    note = write_note(client, headers, "remember the milk")

    response = client.get(f"/notes/{note['id']}", headers=headers)

    assert response.status_code == 200
    assert response.get_json() == note


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "x" * 10_000,
        "é" * 10_000,  # the limit counts characters, not UTF-8 bytes
        "🎉" * 10_000,
    ],
    ids=["one-char", "10000-ascii", "10000-two-byte", "10000-four-byte"],
)
def test_note_text_of_1_to_10000_characters_is_accepted(client, accounts, text):
    headers = accounts.headers("alice")

    response = client.post("/notes", json={"text": text}, headers=headers)

    assert response.status_code == 201
    assert response.get_json()["text"] == text


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "x" * 10_001},
        {"text": "é" * 10_001},
        {"text": None},
        {"text": 42},
        {"text": ["a list"]},
        {},
    ],
    ids=["empty", "10001-ascii", "10001-two-byte", "null", "number", "list", "missing"],
)
def test_invalid_note_text_answers_422_naming_text_and_stores_nothing(client, accounts, body):
    headers = accounts.headers("alice")

    response = client.post("/notes", json=body, headers=headers)

    assert response.status_code == 422
    error = response.get_json()
    assert error["code"] == 422
    assert "text" in error["errors"]["json"]
    assert list_notes(client, headers)["total"] == 0


@pytest.mark.parametrize(
    "text", ["nul \x00 inside", "lone surrogate \ud800"], ids=["nul", "surrogate"]
)
def test_text_the_database_cannot_store_answers_422_not_500(client, accounts, text):
    headers = accounts.headers("alice")

    response = client.post("/notes", json={"text": text}, headers=headers)

    assert response.status_code == 422
    assert "text" in response.get_json()["errors"]["json"]
    assert list_notes(client, headers)["total"] == 0


def test_a_note_cannot_be_written_into_someone_elses_account(client, accounts):
    victim = accounts.signup("victim")
    victim_headers = bearer(accounts.token("victim"))
    headers = accounts.headers("mallory")

    response = client.post(
        "/notes", json={"text": "planted", "owner_id": victim["id"]}, headers=headers
    )

    assert response.status_code == 422
    assert "owner_id" in response.get_json()["errors"]["json"]
    assert list_notes(client, victim_headers)["total"] == 0
    assert list_notes(client, headers)["total"] == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"is_admin": True},
        {"id": 12345},
        {"created_at": "2000-01-01T00:00:00+00:00"},
        {"updated_at": "2000-01-01T00:00:00+00:00"},
        {"colour": "red"},
    ],
    ids=lambda extra: next(iter(extra)),
)
def test_an_unknown_field_in_a_note_answers_422_and_stores_nothing(client, accounts, extra):
    headers = accounts.headers("alice")

    response = client.post("/notes", json={"text": "hello", **extra}, headers=headers)

    assert response.status_code == 422
    assert next(iter(extra)) in response.get_json()["errors"]["json"]
    assert list_notes(client, headers)["total"] == 0


def test_a_note_body_that_is_not_json_answers_a_json_error(client, accounts):
    headers = accounts.headers("alice")

    response = client.post(
        "/notes", data="{not json", headers={**headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.get_json()["code"] == 400
    assert list_notes(client, headers)["total"] == 0


@pytest.mark.parametrize(
    "text",
    [
        "Grüße aus Köln",
        "日本語のメモ",
        "emoji 🎉🚀 and ZWJ 👩‍💻",
        "RTL עברית mixed",
        "e\u0301 combining",
    ],
    ids=["latin", "cjk", "emoji", "rtl", "combining"],
)
def test_multibyte_unicode_text_round_trips_unchanged(client, accounts, text):
    headers = accounts.headers("alice")
    note = write_note(client, headers, text)

    response = client.get(f"/notes/{note['id']}", headers=headers)

    assert note["text"] == text
    assert response.get_json()["text"] == text
    assert list_notes(client, headers)["notes"][0]["text"] == text


# --- listing notes ----------------------------------------------------------------------------


def test_the_list_holds_only_the_callers_notes(client, accounts):
    alice = accounts.signup("alice")
    alice_headers = bearer(accounts.token("alice"))
    bob_headers = accounts.headers("bob")
    write_note(client, alice_headers, "alice one")
    write_note(client, bob_headers, "bob's secret")
    write_note(client, alice_headers, "alice two")

    page = list_notes(client, alice_headers)

    assert page["total"] == 2
    assert {note["text"] for note in page["notes"]} == {"alice one", "alice two"}
    assert all(note["owner_id"] == alice["id"] for note in page["notes"])


def test_a_user_without_notes_gets_an_empty_list(client, accounts):
    write_note(client, accounts.headers("bob"), "bob's note")
    headers = accounts.headers("alice")

    response = client.get("/notes", headers=headers)

    assert response.status_code == 200
    assert response.get_json() == {"notes": [], "total": 0, "page": 1, "page_size": 20, "pages": 0}


def test_the_list_is_newest_first(client, accounts):
    headers = accounts.headers("alice")
    written = [write_note(client, headers, f"note {n}") for n in range(3)]

    page = list_notes(client, headers)

    assert [note["id"] for note in page["notes"]] == [note["id"] for note in reversed(written)]


def test_the_list_pages_20_notes_at_a_time_by_default(client, accounts):
    headers = accounts.headers("alice")
    written = [write_note(client, headers, f"note {n}") for n in range(21)]
    newest_first = [note["id"] for note in reversed(written)]

    first = list_notes(client, headers)
    second = list_notes(client, headers, "?page=2")

    assert (first["total"], first["page"], first["page_size"], first["pages"]) == (21, 1, 20, 2)
    assert [note["id"] for note in first["notes"]] == newest_first[:20]
    assert (second["total"], second["page"], second["page_size"], second["pages"]) == (21, 2, 20, 2)
    assert [note["id"] for note in second["notes"]] == newest_first[20:]


@pytest.mark.parametrize(
    ("page", "expected_slice"),
    [(1, slice(0, 2)), (2, slice(2, 4)), (3, slice(4, 5))],
)
def test_page_and_page_size_choose_the_slice(client, accounts, page, expected_slice):
    headers = accounts.headers("alice")
    written = [write_note(client, headers, f"note {n}") for n in range(5)]
    newest_first = [note["id"] for note in reversed(written)]

    body = list_notes(client, headers, f"?page={page}&page_size=2")

    assert [note["id"] for note in body["notes"]] == newest_first[expected_slice]
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (5, page, 2, 3)


@pytest.mark.parametrize("page_size", [1, 100])
def test_page_size_limits_are_accepted(client, accounts, page_size):
    headers = accounts.headers("alice")
    write_note(client, headers)

    body = list_notes(client, headers, f"?page_size={page_size}")

    assert body["page_size"] == page_size
    assert len(body["notes"]) == 1


def test_a_page_beyond_the_last_is_an_empty_list(client, accounts):
    headers = accounts.headers("alice")
    write_note(client, headers)

    response = client.get("/notes?page=5", headers=headers)

    assert response.status_code == 200
    body = response.get_json()
    assert body["notes"] == []
    assert (body["total"], body["page"], body["pages"]) == (1, 5, 1)


def test_the_largest_page_number_is_an_empty_list_not_an_error(client, accounts):
    headers = accounts.headers("alice")
    write_note(client, headers)

    response = client.get("/notes?page=2147483647&page_size=100", headers=headers)

    assert response.status_code == 200
    assert response.get_json()["notes"] == []
    assert response.get_json()["total"] == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=-1", "page_size"),
        ("page_size=ten", "page_size"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=two", "page"),
        ("page=1.5", "page"),
        ("page=2147483648", "page"),
        ("page=99999999999999999999", "page"),
    ],
)
def test_a_bad_page_or_page_size_answers_422(client, accounts, query, field):
    headers = accounts.headers("alice")

    response = client.get(f"/notes?{query}", headers=headers)

    assert response.status_code == 422
    assert field in response.get_json()["errors"]["query"]


# --- one note ---------------------------------------------------------------------------------


def test_changing_a_note_changes_its_text_and_moves_updated_at_forward(client, accounts):
    headers = accounts.headers("alice")
    note = write_note(client, headers, "draft")

    response = client.patch(f"/notes/{note['id']}", json={"text": "final"}, headers=headers)

    assert response.status_code == 200
    changed = response.get_json()
    assert changed["text"] == "final"
    assert changed["id"] == note["id"]
    assert changed["owner_id"] == note["owner_id"]
    assert changed["created_at"] == note["created_at"]
    assert datetime.fromisoformat(changed["updated_at"]) > datetime.fromisoformat(
        note["updated_at"]
    )
    assert client.get(f"/notes/{note['id']}", headers=headers).get_json() == changed


@pytest.mark.parametrize(
    "body",
    [{"text": ""}, {"text": "x" * 10_001}, {}, {"text": "ok", "owner_id": 2}],
    ids=["empty", "too-long", "missing", "owner_id"],
)
def test_an_invalid_change_answers_422_and_leaves_the_note_alone(client, accounts, body):
    headers = accounts.headers("alice")
    note = write_note(client, headers, "original")

    response = client.patch(f"/notes/{note['id']}", json=body, headers=headers)

    assert response.status_code == 422
    assert client.get(f"/notes/{note['id']}", headers=headers).get_json() == note


def test_deleting_a_note_answers_204_and_it_is_gone(client, accounts):
    headers = accounts.headers("alice")
    note = write_note(client, headers)

    response = client.delete(f"/notes/{note['id']}", headers=headers)

    assert response.status_code == 204
    assert response.data == b""
    assert client.get(f"/notes/{note['id']}", headers=headers).status_code == 404
    assert list_notes(client, headers)["total"] == 0


def test_deleting_a_note_twice_answers_404_the_second_time(client, accounts):
    headers = accounts.headers("alice")
    note = write_note(client, headers)
    client.delete(f"/notes/{note['id']}", headers=headers)

    response = client.delete(f"/notes/{note['id']}", headers=headers)

    assert response.status_code == 404
    assert response.get_json()["code"] == 404


# --- other people's notes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "body"),
    [("get", None), ("patch", {"text": "defaced"}), ("delete", None)],
)
def test_someone_elses_note_answers_404_like_a_missing_one(client, accounts, method, body):
    owner_headers = accounts.headers("alice")
    note = write_note(client, owner_headers, "alice's secret")
    missing_id = note["id"] + 1000
    headers = accounts.headers("mallory")
    send = getattr(client, method)

    response = send(f"/notes/{note['id']}", json=body, headers=headers)
    missing = send(f"/notes/{missing_id}", json=body, headers=headers)

    assert response.status_code == 404
    assert missing.status_code == 404
    assert without_request_id(response) == without_request_id(missing)
    assert client.get(f"/notes/{note['id']}", headers=owner_headers).get_json() == note


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
@pytest.mark.parametrize("note_id", ["2147483648", "99999999999999999999"])
def test_an_id_too_large_to_exist_answers_404_json(client, accounts, method, note_id):
    headers = accounts.headers("alice")

    response = getattr(client, method)(f"/notes/{note_id}", json={"text": "x"}, headers=headers)

    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["code"] == 404


@pytest.mark.parametrize("note_id", ["0", "-1", "abc"])
def test_an_id_that_is_not_a_positive_integer_answers_404_json(client, accounts, note_id):
    headers = accounts.headers("alice")

    response = client.get(f"/notes/{note_id}", headers=headers)

    assert response.status_code == 404
    assert response.get_json()["code"] == 404


# --- without a token --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/notes", None),
        ("post", "/notes", {"text": "anonymous"}),
        ("get", "/notes/1", None),
        ("patch", "/notes/1", {"text": "anonymous"}),
        ("delete", "/notes/1", None),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic YWxpY2U6cHc="}],
    ids=["no-header", "garbage-token", "basic-auth"],
)
def test_notes_without_a_valid_token_answer_401_json(client, accounts, method, path, body, headers):
    owner_headers = accounts.headers("alice")
    note = write_note(client, owner_headers, "private")

    response = getattr(client, method)(path, json=body, headers=headers)

    assert response.status_code == 401
    assert response.is_json
    assert response.get_json()["code"] == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert list_notes(client, owner_headers)["notes"] == [note]


def test_racing_change_and_deletions_of_one_note_never_fail_with_500(app, accounts):
    headers = accounts.headers("alice")
    note_ids = [
        app.test_client().post("/notes", json={"text": f"n{i}"}, headers=headers).get_json()["id"]
        for i in range(5)
    ]

    def act(job):
        method, note_id = job
        client = app.test_client()
        if method == "patch":
            return method, client.patch(
                f"/notes/{note_id}", json={"text": "edited"}, headers=headers
            ).status_code
        return method, client.delete(f"/notes/{note_id}", headers=headers).status_code

    jobs = [(method, note_id) for note_id in note_ids for method in ("patch", "delete", "delete")]
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(act, jobs))

    assert all(status in (200, 204, 404) for _, status in outcomes), outcomes
    deletions = [status for method, status in outcomes if method == "delete"]
    assert deletions.count(204) == len(note_ids)  # each note deleted once, the other 404


def test_a_change_queued_too_long_behind_another_answers_503_busy(app, client, accounts):
    headers = accounts.headers("alice")
    note = write_note(client, headers)

    with (
        app.app_context(),
        holding_lock(app, "SELECT id FROM notes WHERE id = :id FOR UPDATE", id=note["id"]),
    ):
        started = time.monotonic()
        response = client.patch(f"/notes/{note['id']}", json={"text": "queued"}, headers=headers)
        waited = time.monotonic() - started

    assert response.status_code == 503
    assert (
        response.get_json()["message"] == "Another change to the same data is under way; try again."
    )
    assert response.headers["Retry-After"] == "1"
    assert waited < app.config["DATABASE_TIMEOUT_SECONDS"]  # the lock timeout, not the deadline
    again = client.patch(f"/notes/{note['id']}", json={"text": "queued"}, headers=headers)
    assert again.status_code == 200


def test_a_connection_first_used_by_a_cli_command_still_gives_up_on_locks_in_requests(
    app, accounts
):
    """One pooled connection, opened by a CLI command (which may wait for locks as long as it
    needs), then used by a request: the request still gets the lock timeout, a 503 busy."""
    one_connection = TEST_SETTINGS | {
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0}
    }
    small = create_app(one_connection)
    client = small.test_client()
    headers = accounts.headers("alice")
    note = write_note(client, headers)
    with small.app_context():
        db.engine.dispose()  # the next connection is opened by the command
    assert small.test_cli_runner().invoke(args=["prune-revocations"]).exit_code == 0

    # The lock is held through the session app's own pool.
    with holding_lock(app, "SELECT id FROM notes WHERE id = :id FOR UPDATE", id=note["id"]):
        response = client.patch(f"/notes/{note['id']}", json={"text": "queued"}, headers=headers)

    assert response.status_code == 503
    assert response.get_json()["message"].startswith("Another change to the same data")
    with small.app_context():
        db.engine.dispose()


def test_a_request_that_finds_every_pooled_connection_busy_answers_503_not_500(accounts):
    one_connection = TEST_SETTINGS | {
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5}
    }
    small = create_app(one_connection)
    client = small.test_client()
    headers = accounts.headers("alice")

    with holding_lock(small, "SELECT 1"):  # takes the pool's only connection
        response = client.get("/notes", headers=headers)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert client.get("/notes", headers=headers).status_code == 200
    with small.app_context():
        db.engine.dispose()
