"""The audit trail is append-only in PostgreSQL and hash-chained; `flask audit` verifies it.

Tampering is done as an attacker with database access would: raw SQL through psycopg2, as the
superuser, with the triggers bypassed (`session_replication_role = replica`).
"""

import base64
import hashlib
import json
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import psycopg2
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy.engine import make_url

from devlab.audit import chain
from tests.conftest import TEST_DATABASE_URL

ZEROS = "0" * 64


@contextmanager
def raw(bypass_triggers: bool = False):
    """A psycopg2 connection of its own, committed at the end of the block."""
    url = make_url(TEST_DATABASE_URL)
    connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    )
    try:
        with connection, connection.cursor() as cursor:
            if bypass_triggers:
                cursor.execute("SET LOCAL session_replication_role = replica")
            yield cursor
    finally:
        connection.close()


def add_rows(count: int, action: str = "note_created") -> None:
    with raw() as cursor:
        for number in range(count):
            cursor.execute(
                "INSERT INTO audit_logs (action, detail) VALUES (%s, %s)", (action, f"row {number}")
            )


def stored_rows() -> list[dict]:
    with raw() as cursor:
        cursor.execute("SELECT * FROM audit_logs ORDER BY id")
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def auditors_row_hash(prev_hash: str, row: dict) -> str:
    """The README's encoding, written out as an auditor would, independent of devlab."""
    fields = {key: value for key, value in row.items() if key not in ("prev_hash", "row_hash")}
    fields["created_at"] = fields["created_at"].isoformat(timespec="microseconds")
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def verify(runner, *args):
    result = runner.invoke(args=["audit", "verify", *args])
    return result.exit_code, result.output


# --- append-only -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_logs SET detail = 'rewritten' WHERE id = 1",
        "UPDATE audit_logs SET row_hash = repeat('a', 64)",
        "DELETE FROM audit_logs WHERE id = 1",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
        "TRUNCATE audit_logs CASCADE",
    ],
)
def test_postgresql_refuses_to_change_or_remove_audit_rows_even_for_the_owner(statement):
    add_rows(2)

    refused = pytest.raises(
        psycopg2.errors.InsufficientPrivilege, match="audit_logs is append-only"
    )
    with refused, raw() as cursor:
        cursor.execute(statement)

    assert len(stored_rows()) == 2


def test_the_purge_setting_allows_deletion_only_in_its_own_transaction():
    add_rows(3)
    with raw() as cursor:
        cursor.execute("SET LOCAL devlab.audit_purge = 'on'")
        cursor.execute("DELETE FROM audit_logs WHERE id = 1")

    with pytest.raises(psycopg2.errors.InsufficientPrivilege), raw() as cursor:
        cursor.execute("DELETE FROM audit_logs WHERE id = 2")

    assert [row["id"] for row in stored_rows()] == [2, 3]


# --- the chain as PostgreSQL writes it -------------------------------------------------------


ODD_TEXTS = [
    'quotes " and \\ backslashes',
    "control \x01 \x1f \b \f \n \r \t characters",
    "unicode: é ß 中文 🙂 \u2028 \u2029 \x7f",
    "",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_postgresql_chains_each_row_with_the_published_encoding(text):
    changes = {"zeta": {"old": 1, "new": None}, "Émile": [True, False, text], "a": {}}
    with raw() as cursor:
        cursor.execute("INSERT INTO audit_logs (action) VALUES ('signup')")
        cursor.execute(
            "INSERT INTO audit_logs (action, detail, ip, user_agent, path, changes, target_type, "
            "target_id, request_id, status_code, method) "
            "VALUES ('note_updated', %s, '::1', %s, %s, %s, 'note', '7', 'req-12345678', 200, "
            "'PATCH')",
            (text, text, text, json.dumps(changes)),
        )

    first, second = stored_rows()
    assert first["prev_hash"] == ZEROS
    assert first["row_hash"] == auditors_row_hash(ZEROS, first)
    assert second["prev_hash"] == first["row_hash"]
    assert second["row_hash"] == auditors_row_hash(first["row_hash"], second)


@pytest.mark.parametrize("chosen_id", [2, 2**31 - 1])
def test_a_writer_can_choose_neither_a_rows_hashes_nor_its_id(chosen_id):
    """Not below the head (a row in the chain's past), nor far above it (the sequence's end,
    after which no row could be written)."""
    add_rows(3)
    with raw() as cursor:
        cursor.execute(
            "INSERT INTO audit_logs (id, action, prev_hash, row_hash) "
            "VALUES (%s, 'signup', repeat('f', 64), repeat('f', 64)) RETURNING id",
            (chosen_id,),
        )
        (new_id,) = cursor.fetchone()
    add_rows(1)

    rows = stored_rows()
    assert [row["id"] for row in rows] == [1, 2, 3, 4, 5]
    assert new_id == 4
    for before, row in pairwise(rows):
        assert row["prev_hash"] == before["row_hash"]
        assert row["row_hash"] == auditors_row_hash(before["row_hash"], row)


def test_a_sequence_set_back_below_the_head_cannot_fork_the_chain(runner):
    add_rows(5)
    with raw() as cursor:
        cursor.execute("SELECT setval('audit_logs_id_seq', 2)")
    add_rows(2)

    assert [row["id"] for row in stored_rows()] == [1, 2, 3, 4, 5, 6, 7]
    assert verify(runner) == (0, "7 rows checked: ok\n")


def test_eight_concurrent_writers_leave_one_chain_that_verifies(runner):
    writers, rows_each = 8, 400
    start = threading.Barrier(writers)
    failures = []

    def write(writer: int) -> None:
        try:
            start.wait(timeout=30)
            for number in range(rows_each):
                with raw() as cursor:  # one transaction per row, as requests do
                    cursor.execute(
                        "INSERT INTO audit_logs (action, detail) VALUES ('note_created', %s)",
                        (f"writer {writer} row {number}",),
                    )
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    rows = stored_rows()
    assert len(rows) == writers * rows_each
    assert all(row["prev_hash"] == before["row_hash"] for before, row in pairwise(rows))
    assert verify(runner) == (0, f"{writers * rows_each} rows checked: ok\n")


def test_requests_write_chained_rows_that_verify(client, accounts, runner):
    headers = accounts.headers("alice")
    for number in range(5):
        client.post("/notes", json={"text": f"note {number}"}, headers=headers)

    code, output = verify(runner)

    assert (code, output) == (0, "7 rows checked: ok\n")  # signup, login and five notes


# --- tampering, caught -------------------------------------------------------------------


def test_verify_catches_a_changed_row(runner):
    add_rows(20)
    with raw(bypass_triggers=True) as cursor:
        cursor.execute("UPDATE audit_logs SET detail = 'nothing happened' WHERE id = 11")

    code, output = verify(runner)

    assert code == 1
    assert "row 11: row changed" in output


def test_verify_catches_a_row_deleted_from_the_middle(runner):
    add_rows(20)
    with raw(bypass_triggers=True) as cursor:
        cursor.execute("DELETE FROM audit_logs WHERE id = 11")

    code, output = verify(runner)

    assert code == 1
    assert "row 12: row missing before it" in output


def test_verify_catches_the_first_row_deleted(runner):
    add_rows(5)
    with raw(bypass_triggers=True) as cursor:
        cursor.execute("DELETE FROM audit_logs WHERE id = 1")

    code, output = verify(runner)

    assert code == 1
    assert "row 2: rows missing before it" in output


def test_verify_catches_a_forged_row_inserted_in_the_middle_with_correct_hashes(runner):
    add_rows(10)
    with raw() as cursor:  # a gap in the ids: a writer that rolled back
        cursor.execute("SELECT nextval('audit_logs_id_seq')")
    add_rows(10)
    rows = stored_rows()
    gap = next(row["id"] + 1 for row, after in pairwise(rows) if after["id"] != row["id"] + 1)
    before = next(row for row in rows if row["id"] == gap - 1)
    forged = dict(before, id=gap, detail="the forger was here", prev_hash=before["row_hash"])
    forged["row_hash"] = auditors_row_hash(forged["prev_hash"], forged)
    with raw(bypass_triggers=True) as cursor:
        cursor.execute(
            "INSERT INTO audit_logs (id, action, detail, created_at, prev_hash, row_hash) "
            "VALUES (%(id)s, %(action)s, %(detail)s, %(created_at)s, %(prev_hash)s, %(row_hash)s)",
            forged,
        )

    code, output = verify(runner)

    assert code == 1
    assert f"row {gap}: row inserted" in output


def saved_head(runner, tmp_path):
    result = runner.invoke(args=["audit", "head"])
    assert result.exit_code == 0, result.output
    heads = tmp_path / "heads.jsonl"
    heads.write_text(result.output)
    return json.loads(result.output), heads


def test_deleting_the_newest_rows_passes_the_chain_but_not_a_saved_head(runner, tmp_path):
    add_rows(30)
    head, heads = saved_head(runner, tmp_path)
    with raw(bypass_triggers=True) as cursor:
        cursor.execute("DELETE FROM audit_logs WHERE id > 20")

    assert verify(runner) == (0, "20 rows checked: ok\n")
    code, output = verify(runner, "--head", str(heads))
    assert code == 1
    assert f"head {head['id']} (line 1): chain ends early (the newest row is 20)" in output


def test_a_rewritten_chain_passes_alone_but_not_against_a_saved_head(runner, tmp_path):
    add_rows(30)
    head, heads = saved_head(runner, tmp_path)
    rows = stored_rows()
    rows[9]["detail"] = "rewritten history"
    previous = rows[8]["row_hash"]
    with raw(bypass_triggers=True) as cursor:
        for row in rows[9:]:
            row["prev_hash"], row["row_hash"] = previous, auditors_row_hash(previous, row)
            cursor.execute(
                "UPDATE audit_logs SET detail = %s, prev_hash = %s, row_hash = %s WHERE id = %s",
                (row["detail"], row["prev_hash"], row["row_hash"], row["id"]),
            )
            previous = row["row_hash"]

    assert verify(runner) == (0, "30 rows checked: ok\n")
    code, output = verify(runner, "--head", str(heads))
    assert code == 1
    assert f"head {head['id']} (line 1): row changed" in output


def test_a_head_with_a_forged_signature_fails_verification(runner, tmp_path):
    add_rows(3)
    head, heads = saved_head(runner, tmp_path)
    forged = dict(head, id=2, row_hash=stored_rows()[1]["row_hash"])
    heads.write_text(json.dumps(head) + "\n" + json.dumps(forged) + "\nnot json\n")

    code, output = verify(runner, "--head", str(heads))

    assert code == 1
    assert "head 2 (line 2): bad signature" in output
    assert "head on line 3: not a head" in output
    assert f"head {head['id']} (line 1)" not in output


def test_saved_heads_of_an_untouched_trail_verify(runner, tmp_path):
    add_rows(5)
    _, heads = saved_head(runner, tmp_path)
    add_rows(5)
    heads.write_text(heads.read_text() + runner.invoke(args=["audit", "head"]).output)

    assert verify(runner, "--head", str(heads)) == (0, "10 rows checked: ok\n")


# --- heads --------------------------------------------------------------------------------


def test_a_head_is_signed_over_its_canonical_json_and_the_public_key_verifies_it(runner):
    add_rows(3)
    head = json.loads(runner.invoke(args=["audit", "head"]).output)
    pem = runner.invoke(args=["audit", "public-key"]).output

    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert set(head) == {"id", "row_hash", "at", "signature"}
    assert (head["id"], head["row_hash"]) == (3, stored_rows()[-1]["row_hash"])
    assert head["at"].endswith("+00:00")
    signed = json.dumps(
        {key: head[key] for key in ("at", "id", "row_hash")}, sort_keys=True, separators=(",", ":")
    ).encode()
    load_pem_public_key(pem.encode()).verify(base64.b64decode(head["signature"]), signed)


def test_admins_read_the_signed_head_over_http_and_the_read_is_audited(client, accounts, app):
    admin = accounts.admin_headers("root")
    user = accounts.headers("alice")

    response = client.get("/audit/head", headers=admin)

    assert client.get("/audit/head", headers=user).status_code == 403
    assert client.get("/audit/head").status_code == 401
    assert response.status_code == 200
    head = response.get_json()
    (read,) = rows_of("audit_read")
    newest_before_the_read = next(row for row in stored_rows() if row["id"] == read["id"] - 1)
    assert (head["id"], head["row_hash"]) == (
        newest_before_the_read["id"],
        newest_before_the_read["row_hash"],
    )
    with app.app_context():
        public_key = chain.signing_key(app).public_key()
    assert chain.head_signature_holds(head, public_key)
    assert read["user_id"] == 1 and read["path"] == "/audit/head"


# --- what the rows record -------------------------------------------------------------------


def rows_of(action: str) -> list[dict]:
    return [row for row in stored_rows() if row["action"] == action]


def test_rows_name_their_target_and_what_changed_without_secrets_or_note_text(client, accounts):
    admin = accounts.admin_headers("root")
    alice = accounts.signup("alice")
    headers = {"Authorization": f"Bearer {accounts.token('alice')}"}
    note = client.post("/notes", json={"text": "secret plans"}, headers=headers).get_json()
    client.patch(f"/notes/{note['id']}", json={"text": "longer secret plans"}, headers=headers)
    client.post(f"/admin/promote/{alice['id']}", headers=admin)
    client.post(f"/admin/promote/{alice['id']}", headers=admin)  # already: nothing changed
    client.post(f"/admin/users/{alice['id']}/deactivate", headers=admin)
    client.post(
        "/me/password",
        json={"current_password": "correct horse battery staple", "new_password": "x" * 20},
        headers=accounts.admin_headers("bob"),
    )

    (signup,) = [row for row in rows_of("signup") if row["user_id"] == alice["id"]]
    assert (signup["target_type"], signup["target_id"]) == ("user", str(alice["id"]))
    (updated,) = rows_of("note_updated")
    assert (updated["target_type"], updated["target_id"]) == ("note", str(note["id"]))
    assert updated["changes"] == {"text": {"old_length": 12, "new_length": 19}}
    promoted = [row for row in rows_of("user_promoted") if row["target_id"] == str(alice["id"])]
    assert [row["changes"] for row in promoted] == [{"is_admin": {"old": False, "new": True}}, {}]
    assert {row["target_type"] for row in promoted} == {"user"}
    (deactivated,) = rows_of("user_deactivated")
    assert deactivated["changes"] == {"is_active": {"old": True, "new": False}}
    (password,) = rows_of("password_changed")
    assert password["changes"] == {"password": "changed"}
    everything = json.dumps(stored_rows(), default=str)
    assert "secret plans" not in everything
    assert "$argon2" not in everything


def test_token_family_actions_name_the_family(client, accounts):
    accounts.signup("alice")
    tokens = client.post(
        "/login", json={"username": "alice", "password": "correct horse battery staple"}
    ).get_json()
    refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    renewed = client.post("/token/refresh", headers=refresh).get_json()
    client.post("/logout", headers={"Authorization": f"Bearer {renewed['access_token']}"})

    (refreshed,) = rows_of("token_refreshed")
    (logout,) = rows_of("logout")
    assert refreshed["target_type"] == logout["target_type"] == "token_family"
    assert refreshed["target_id"] == logout["target_id"] and len(logout["target_id"]) == 36


def test_rows_keep_the_first_256_characters_of_the_user_agent(client, accounts):
    accounts.signup("alice", headers={"User-Agent": "agent/" + "x" * 400})

    (signup,) = rows_of("signup")
    assert signup["user_agent"] == ("agent/" + "x" * 400)[:256]


# --- retention --------------------------------------------------------------------------------


def add_dated_rows(days_ago: list[int]) -> None:
    with raw() as cursor:
        for days in days_ago:
            cursor.execute(
                "INSERT INTO audit_logs (action, detail, created_at) "
                "VALUES ('login_success', %s, now() - make_interval(days => %s))",
                (f"{days} days ago", days),
            )


def purge(runner, before: str):
    result = runner.invoke(args=["audit", "purge", "--before", before])
    return result.exit_code, result.output


def test_purge_removes_the_old_rows_records_its_anchor_and_verify_still_holds(runner, monkeypatch):
    monkeypatch.setattr(chain, "PURGE_BATCH_ROWS", 7)  # several transactions
    add_dated_rows([400] * 30 + [100] * 20 + [1] * 5)
    anchor = stored_rows()[49]

    cutoff = datetime.now(UTC) - timedelta(days=50)
    code, output = purge(runner, cutoff.strftime("%Y-%m-%d"))

    assert code == 0, output
    assert f"Purged 50 rows created before {cutoff.strftime('%Y-%m-%d')}T00:00:00" in output
    rows = stored_rows()
    assert [row["detail"] for row in rows[:5]] == ["1 days ago"] * 5
    assert rows[0]["prev_hash"] == anchor["row_hash"]
    (purged,) = [row for row in rows if row["action"] == "audit_purged"]
    assert purged["changes"] == {
        "purged": 50,
        "before": f"{cutoff.strftime('%Y-%m-%d')}T00:00:00.000000+00:00",
        "anchor_id": anchor["id"],
        "anchor_hash": anchor["row_hash"],
    }
    assert verify(runner) == (0, "6 rows checked: ok\n")
    assert purge(runner, cutoff.strftime("%Y-%m-%d"))[1].endswith("nothing purged.\n")


def test_purge_stops_at_the_first_row_it_must_keep_so_the_chain_has_no_hole(runner):
    add_dated_rows([10, 10, 1, 10, 1])  # a late writer: id 4 is older than id 3

    code, output = purge(runner, (datetime.now(UTC) - timedelta(days=5)).isoformat())

    assert code == 0, output
    assert [row["id"] for row in stored_rows()] == [3, 4, 5, 6]
    assert verify(runner)[0] == 0


def test_after_a_purge_a_deletion_at_the_start_is_still_caught(runner):
    add_dated_rows([100] * 5 + [1] * 5)
    purge(runner, (datetime.now(UTC) - timedelta(days=50)).isoformat())
    with raw(bypass_triggers=True) as cursor:
        cursor.execute("DELETE FROM audit_logs WHERE id = 6")

    code, output = verify(runner)

    assert code == 1
    assert "row 7: rows missing before it" in output


def test_a_head_saved_before_a_purge_is_reported_as_purged_not_as_tampering(runner, tmp_path):
    add_dated_rows([100] * 5)
    head, heads = saved_head(runner, tmp_path)
    add_dated_rows([1] * 3)
    purge(runner, (datetime.now(UTC) - timedelta(days=50)).isoformat())

    code, output = verify(runner, "--head", str(heads))

    assert code == 0, output
    assert f"head {head['id']} (line 1): purged" in output
    assert output.endswith("4 rows checked: ok\n")


@pytest.mark.parametrize(
    "before",
    ["2026-13-01", "yesterday", "2026-01-01T00:00:00", "2026-01-01 00:00", "", "2999-01-01"],
)
def test_purge_refuses_a_date_without_offset_malformed_or_in_the_future(runner, before):
    add_dated_rows([400] * 3)

    code, output = purge(runner, before)

    assert code == 2
    assert "--before" in output
    assert len(stored_rows()) == 3


def test_every_row_of_a_request_stores_its_request_id(client, accounts):
    response = client.post(
        "/signup",
        json={"username": "alice", "email": "alice@example.com", "password": "x" * 20},
    )
    failed = client.post("/login", json={"username": "alice", "password": "wrong" * 4})

    (signup,) = rows_of("signup")
    (login_failed,) = rows_of("login_failed")
    assert signup["request_id"] == response.headers["X-Request-ID"]
    assert login_failed["request_id"] == failed.headers["X-Request-ID"]
    assert failed.get_json()["request_id"] == login_failed["request_id"]


def test_the_head_of_an_emptied_trail_is_a_404_not_a_500(client, accounts):
    admin = accounts.admin_headers("root")
    with raw(bypass_triggers=True) as cursor:
        cursor.execute("DELETE FROM audit_logs")

    response = client.get("/audit/head", headers=admin)

    assert response.status_code == 404
    assert response.get_json()["message"] == "The audit trail is empty: there is no head to sign."
