"""The audit trail: what each request records, who may read it, and that nobody can change it."""

import re

import pytest
from sqlalchemy.exc import IntegrityError

from devlab import create_app
from devlab.audit.trail import pseudonym
from devlab.extensions import db
from devlab.models import User
from tests.conftest import TEST_SETTINGS, delete_user_behind_the_apps_back

ALICES_PASSWORD = "alice-only-knows-this-one"
WRONG_PASSWORD = "not the password at all 123"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def write_note(client, headers: dict, text: str = "a note") -> dict:
    response = client.post("/notes", json={"text": text}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def request_of(row) -> tuple:
    """What a row says about the request that wrote it."""
    return (row.user_id, row.ip, row.method, row.path, row.status_code)


def snapshot(audit_rows) -> list[tuple]:
    return [(row.id, row.action, row.detail, row.user_id) for row in audit_rows()]


# --- reading the trail ------------------------------------------------------------------------


def test_the_audit_log_without_a_token_answers_401(client):
    response = client.get("/audit/logs")

    assert response.status_code == 401
    assert response.get_json()["code"] == 401


def test_the_audit_log_answers_403_to_a_normal_user(client, accounts):
    headers = accounts.headers("alice")

    response = client.get("/audit/logs", headers=headers)

    assert response.status_code == 403
    assert response.get_json()["code"] == 403


def test_the_audit_log_is_newest_first(client, accounts, audit_rows):
    headers = accounts.admin_headers("root")
    note = write_note(client, headers)
    client.patch(f"/notes/{note['id']}", json={"text": "changed"}, headers=headers)
    client.delete(f"/notes/{note['id']}", headers=headers)
    newest_first = [row.id for row in reversed(audit_rows())]

    response = client.get("/audit/logs", headers=headers)

    assert response.status_code == 200
    logs = response.get_json()["logs"]
    assert [log["id"] for log in logs] == newest_first
    assert [log["action"] for log in logs[:3]] == ["note_deleted", "note_updated", "note_created"]


def test_the_audit_log_shows_every_field_of_a_row(client, accounts, audit_rows):
    headers = accounts.admin_headers("root")
    write_note(client, headers)
    (row,) = audit_rows("note_created")

    response = client.get("/audit/logs?action=note_created", headers=headers)

    (log,) = response.get_json()["logs"]
    assert log["id"] == row.id
    assert log["detail"] == row.detail
    assert (log["user_id"], log["ip"], log["method"], log["path"], log["status_code"]) == (
        request_of(row)
    )
    assert log["created_at"]


def test_the_audit_log_pages(client, accounts, audit_rows):
    headers = accounts.admin_headers("root")
    for n in range(4):
        write_note(client, headers, f"note {n}")
    newest_first = [row.id for row in reversed(audit_rows())]

    response = client.get("/audit/logs?page=2&page_size=3", headers=headers)

    assert response.status_code == 200
    body = response.get_json()
    total = len(newest_first)
    assert (body["total"], body["page"], body["page_size"]) == (total, 2, 3)
    assert body["pages"] == -(-total // 3)
    assert [log["id"] for log in body["logs"]] == newest_first[3:6]


def test_the_audit_log_filters_by_action(client, accounts):
    headers = accounts.admin_headers("root")
    write_note(client, headers, "one")
    write_note(client, headers, "two")

    response = client.get("/audit/logs?action=note_created", headers=headers)

    assert response.status_code == 200
    body = response.get_json()
    assert body["total"] == 2
    assert {log["action"] for log in body["logs"]} == {"note_created"}


def test_the_audit_log_filters_by_acting_user(client, accounts, audit_rows):
    admin_headers = accounts.admin_headers("root")
    bob = accounts.signup("bob")
    write_note(client, bearer(accounts.token("bob")), "bob's")
    write_note(client, admin_headers, "root's")
    bobs_rows = [row.id for row in reversed(audit_rows()) if row.user_id == bob["id"]]

    response = client.get(f"/audit/logs?user_id={bob['id']}", headers=admin_headers)

    assert response.status_code == 200
    logs = response.get_json()["logs"]
    assert [log["id"] for log in logs] == bobs_rows
    assert {log["action"] for log in logs} == {"signup", "login_success", "note_created"}


def test_the_audit_log_combines_filters(client, accounts):
    admin_headers = accounts.admin_headers("root")
    bob = accounts.signup("bob")
    write_note(client, bearer(accounts.token("bob")), "bob's")
    write_note(client, admin_headers, "root's")

    response = client.get(
        f"/audit/logs?action=note_created&user_id={bob['id']}", headers=admin_headers
    )

    (log,) = response.get_json()["logs"]
    assert (log["action"], log["user_id"]) == ("note_created", bob["id"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("action=note_exploded", "action"),
        ("action=", "action"),
        ("user_id=abc", "user_id"),
        ("user_id=0", "user_id"),
        ("user_id=99999999999999999999", "user_id"),
        ("page=0", "page"),
        ("page_size=101", "page_size"),
    ],
)
def test_a_bad_audit_log_filter_answers_422(client, accounts, query, field):
    headers = accounts.admin_headers("root")

    response = client.get(f"/audit/logs?{query}", headers=headers)

    assert response.status_code == 422
    assert field in response.get_json()["errors"]["query"]


# --- what each action records -----------------------------------------------------------------


def test_signup_is_recorded_as_the_new_user(accounts, audit_rows):
    user = accounts.signup("alice")

    (row,) = audit_rows("signup")
    assert request_of(row) == (user["id"], "127.0.0.1", "POST", "/signup", 201)
    assert row.detail == f"user {user['id']}"  # by id only: the trail outlives an erasure


def test_a_successful_login_is_recorded_as_that_user(accounts, audit_rows):
    user = accounts.signup("alice")

    accounts.token("alice")

    (row,) = audit_rows("login_success")
    assert request_of(row) == (user["id"], "127.0.0.1", "POST", "/login", 200)


@pytest.mark.parametrize("attempted", ["alice", "ALICE"])
def test_a_failed_login_of_an_existing_user_is_recorded_against_that_user(
    client, accounts, audit_rows, attempted
):
    user = accounts.signup("alice")

    response = client.post("/login", json={"username": attempted, "password": WRONG_PASSWORD})

    assert response.status_code == 401
    (row,) = audit_rows("login_failed")
    assert request_of(row) == (user["id"], "127.0.0.1", "POST", "/login", 401)
    assert row.detail == f"attempted username: user {user['id']}"
    assert audit_rows("login_success") == []


def test_a_failed_login_of_an_unknown_user_is_recorded_without_a_user(client, accounts, audit_rows):
    accounts.signup("alice")

    response = client.post("/login", json={"username": "mallory", "password": WRONG_PASSWORD})

    assert response.status_code == 401
    (row,) = audit_rows("login_failed")
    assert request_of(row) == (None, "127.0.0.1", "POST", "/login", 401)
    assert row.detail.startswith("attempted username: unknown username ")


def test_a_note_being_written_is_recorded_as_its_owner(client, accounts, audit_rows):
    user = accounts.signup("alice")
    headers = bearer(accounts.token("alice"))

    note = write_note(client, headers)

    (row,) = audit_rows("note_created")
    assert request_of(row) == (user["id"], "127.0.0.1", "POST", "/notes", 201)
    assert str(note["id"]) in row.detail


@pytest.mark.parametrize(
    ("method", "body", "action", "status"),
    [
        ("patch", {"text": "changed"}, "note_updated", 200),
        ("delete", None, "note_deleted", 204),
    ],
)
def test_a_note_being_changed_is_recorded_as_its_owner(
    client, accounts, audit_rows, method, body, action, status
):
    user = accounts.signup("alice")
    headers = bearer(accounts.token("alice"))
    note = write_note(client, headers)
    path = f"/notes/{note['id']}"

    response = getattr(client, method)(path, json=body, headers=headers)

    assert response.status_code == status
    (row,) = audit_rows(action)
    assert request_of(row) == (user["id"], "127.0.0.1", method.upper(), path, status)
    assert str(note["id"]) in row.detail


def test_a_promotion_is_recorded_as_the_acting_admin(client, accounts, audit_rows):
    headers = accounts.admin_headers("root")
    root_id = client.get("/me", headers=headers).get_json()["id"]
    bob = accounts.signup("bob")

    client.post(f"/admin/promote/{bob['id']}", headers=headers)

    cli_row, row = audit_rows("user_promoted")  # the first is root's own, from the CLI
    path = f"/admin/promote/{bob['id']}"
    assert request_of(row) == (root_id, "127.0.0.1", "POST", path, 200)
    assert row.detail == f"promoted user {bob['id']}"
    assert (cli_row.user_id, cli_row.ip) == (None, None)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"},
        {"Authorization": "Token abc"},
    ],
    ids=["no-token", "garbage-token", "badly-signed-token", "wrong-scheme"],
)
def test_a_401_is_recorded_as_access_denied_without_a_user(client, accounts, audit_rows, headers):
    accounts.signup("alice")

    response = client.get("/notes", headers=headers)

    assert response.status_code == 401
    (row,) = audit_rows("access_denied")
    assert request_of(row) == (None, "127.0.0.1", "GET", "/notes", 401)


def test_a_403_is_recorded_as_access_denied_for_the_caller(client, accounts, audit_rows):
    user = accounts.signup("alice")
    headers = bearer(accounts.token("alice"))

    response = client.get("/admin/users", headers=headers)

    assert response.status_code == 403
    (row,) = audit_rows("access_denied")
    assert request_of(row) == (user["id"], "127.0.0.1", "GET", "/admin/users", 403)


def test_a_403_on_promotion_is_recorded_and_nobody_is_promoted(client, accounts, audit_rows):
    user = accounts.signup("alice")
    headers = bearer(accounts.token("alice"))

    response = client.post(f"/admin/promote/{user['id']}", headers=headers)

    assert response.status_code == 403
    (row,) = audit_rows("access_denied")
    assert request_of(row) == (user["id"], "127.0.0.1", "POST", f"/admin/promote/{user['id']}", 403)
    assert audit_rows("user_promoted") == []


def test_the_token_of_a_deleted_user_is_recorded_as_access_denied_without_a_user(
    app, client, accounts, audit_rows
):
    user = accounts.signup("alice")
    headers = bearer(accounts.token("alice"))
    delete_user_behind_the_apps_back(app, user["id"])

    response = client.get("/notes", headers=headers)

    assert response.status_code == 401
    (row,) = audit_rows("access_denied")
    assert request_of(row) == (None, "127.0.0.1", "GET", "/notes", 401)


def test_a_user_the_trail_names_cannot_be_deleted(app, client, accounts, audit_rows):
    """The trail keeps its actors: deleting one would have to rewrite their rows."""
    user = accounts.signup("alice")
    write_note(client, bearer(accounts.token("alice")))
    before = [(row.id, row.action, row.user_id) for row in audit_rows()]

    with app.app_context():
        db.session.delete(db.session.get(User, user["id"]))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()

    assert [(row.id, row.action, row.user_id) for row in audit_rows()] == before
    assert {row.user_id for row in audit_rows()} == {user["id"]}


# --- the recorded address ---------------------------------------------------------------------


def test_the_recorded_ip_is_the_tcp_peer(accounts, audit_rows):
    accounts.signup("alice", environ_base={"REMOTE_ADDR": "203.0.113.9"})

    (row,) = audit_rows("signup")
    assert row.ip == "203.0.113.9"


@pytest.mark.parametrize(
    "forwarded",
    ["6.6.6.6", "6.6.6.6, 7.7.7.7"],
)
def test_a_client_sent_x_forwarded_for_does_not_change_the_recorded_ip(
    client, accounts, audit_rows, forwarded
):
    accounts.signup("alice")

    client.post(
        "/login",
        json={"username": "alice", "password": WRONG_PASSWORD},
        headers={"X-Forwarded-For": forwarded, "X-Real-IP": "6.6.6.6"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    client.post(
        "/login",
        json={"username": "alice", "password": WRONG_PASSWORD},
        headers={"X-Forwarded-For": forwarded},
    )

    assert [row.ip for row in audit_rows("login_failed")] == ["203.0.113.9", "127.0.0.1"]


# --- what is not recorded ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{"text": ""}, {"text": "x" * 10_001}, {"text": "ok", "owner_id": 1}, {}],
    ids=["empty", "too-long", "unknown-field", "missing"],
)
def test_a_note_that_fails_validation_leaves_no_note_and_no_row(client, accounts, audit_rows, body):
    headers = accounts.headers("alice")
    before = snapshot(audit_rows)

    response = client.post("/notes", json=body, headers=headers)

    assert response.status_code == 422
    assert client.get("/notes", headers=headers).get_json()["total"] == 0
    assert audit_rows("note_created") == []
    assert snapshot(audit_rows) == before


@pytest.mark.parametrize(
    ("caller", "method", "body", "status"),
    [
        ("alice", "patch", {"text": ""}, 422),
        ("mallory", "patch", {"text": "defaced"}, 404),
        ("mallory", "delete", None, 404),
    ],
    ids=["invalid-change", "someone-elses-change", "someone-elses-delete"],
)
def test_a_failed_change_to_a_note_writes_no_row(
    client, accounts, audit_rows, caller, method, body, status
):
    callers = {"alice": accounts.headers("alice"), "mallory": accounts.headers("mallory")}
    note = write_note(client, callers["alice"], "original")
    before = snapshot(audit_rows)

    response = getattr(client, method)(f"/notes/{note['id']}", json=body, headers=callers[caller])

    assert response.status_code == status
    assert snapshot(audit_rows) == before
    assert client.get(f"/notes/{note['id']}", headers=callers["alice"]).get_json() == note


def test_no_row_ever_holds_a_password(client, accounts, audit_rows):
    admin_headers = accounts.admin_headers("root")
    accounts.signup("alice", password=ALICES_PASSWORD)
    accounts.token("alice", password=ALICES_PASSWORD)
    client.post("/login", json={"username": "alice", "password": WRONG_PASSWORD})
    client.post("/login", json={"username": "nobody", "password": WRONG_PASSWORD})
    client.post("/login", data={"username": "alice", "password": WRONG_PASSWORD})

    response = client.get("/audit/logs?page_size=100", headers=admin_headers)

    details = [row.detail or "" for row in audit_rows()]
    assert len(details) >= 8
    for detail in details:
        assert ALICES_PASSWORD not in detail
        assert WRONG_PASSWORD not in detail
    text = response.get_data(as_text=True)
    assert ALICES_PASSWORD not in text
    assert WRONG_PASSWORD not in text


# --- the trail cannot be rewritten ------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize(
    ("path", "status"), [("/audit/logs", 405), ("/audit/logs/1", 404)], ids=["list", "one-row"]
)
def test_there_is_no_route_to_change_or_delete_audit_rows(
    client, accounts, audit_rows, method, path, status
):
    headers = accounts.admin_headers("root")
    before = snapshot(audit_rows)

    response = getattr(client, method)(path, json={"action": "signup"}, headers=headers)

    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["code"] == response.status_code
    assert snapshot(audit_rows) == before


PASSWORD_SHAPED = ["Tr0ub4dor.3", "hunter2-canary", "nobody", "my secret pass!", "x" * 40]


@pytest.mark.parametrize("attempted", PASSWORD_SHAPED)
def test_a_failed_login_names_no_username_that_is_no_account(app, client, audit_rows, attempted):
    """People type passwords into the username box: what matches no account is a pseudonym."""
    client.post("/login", json={"username": attempted, "password": WRONG_PASSWORD})

    [row] = audit_rows("login_failed")
    with app.app_context():
        assert row.detail == f"attempted username: unknown username {pseudonym(attempted)}"
    assert attempted not in row.detail
    assert re.fullmatch(r"attempted username: unknown username [0-9a-f]{16}", row.detail)


def test_repeated_attempts_on_one_unknown_name_share_a_pseudonym_in_any_case(client, audit_rows):
    for typed in ("Ghost.User", "ghost.user", "GHOST.USER", "another"):
        client.post("/login", json={"username": typed, "password": WRONG_PASSWORD})

    details = [row.detail for row in audit_rows("login_failed")]
    assert details[0] == details[1] == details[2] != details[3]


def test_the_pseudonym_depends_on_the_server_key():
    other_key = create_app(TEST_SETTINGS | {"JWT_SECRET_KEY": "another-signing-key-" * 3})
    with create_app(TEST_SETTINGS).app_context():
        ours = pseudonym("nobody")
    with other_key.app_context():
        theirs = pseudonym("nobody")

    assert ours != theirs


@pytest.mark.parametrize("typed", ["alice", "ALICE"])
def test_a_failed_login_names_an_existing_account_by_its_id_only(
    client, accounts, audit_rows, typed
):
    alice = accounts.signup("alice")

    client.post("/login", json={"username": typed, "password": WRONG_PASSWORD})

    [row] = audit_rows("login_failed")
    assert row.detail == f"attempted username: user {alice['id']}"
    assert typed.lower() not in row.detail.lower()


def test_behind_a_proxy_a_forwarded_value_that_is_no_address_is_not_recorded(audit_rows):
    proxied = create_app(TEST_SETTINGS | {"TRUSTED_PROXY_HOPS": 1}).test_client()

    garbage = proxied.post(
        "/login",
        json={"username": "nobody", "password": WRONG_PASSWORD},
        headers={"X-Forwarded-For": "a" * 60},
    )
    real = proxied.post(
        "/login",
        json={"username": "nobody", "password": WRONG_PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.7"},
    )

    assert garbage.status_code == real.status_code == 401
    assert [row.ip for row in audit_rows("login_failed")] == [None, "198.51.100.7"]


@pytest.mark.parametrize(
    ("forwarded", "recorded"),
    [
        ("fe80::1%" + "a" * 60, None),  # a zone id of any length would overflow the column
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_behind_a_proxy_only_plain_addresses_are_recorded(audit_rows, forwarded, recorded):
    proxied = create_app(TEST_SETTINGS | {"TRUSTED_PROXY_HOPS": 1}).test_client()
    account = {"username": "alice", "email": "alice@example.com", "password": ALICES_PASSWORD}

    signup = proxied.post("/signup", json=account, headers={"X-Forwarded-For": forwarded})
    failed = proxied.post(
        "/login",
        json={"username": "alice", "password": WRONG_PASSWORD},
        headers={"X-Forwarded-For": forwarded},
    )

    assert (signup.status_code, failed.status_code) == (201, 401)
    assert [row.ip for row in audit_rows()] == [recorded, recorded]
