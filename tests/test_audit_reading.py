"""Reading the audit trail: pages by cursor, filters, the export, and the reads it records."""

import csv
import io
import json
import re
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from flask_migrate import upgrade
from sqlalchemy import event, insert, text

from bench.statements import counting_statements
from config import Config
from devlab.audit import chain
from devlab.audit.reading import EXPORT_BATCH_ROWS, EXPORT_COLUMNS
from devlab.audit.trail import ACTIONS
from devlab.extensions import db
from devlab.models import AuditLog
from tests.conftest import Accounts

TRAIL = AuditLog.__table__
BASE = datetime(2026, 1, 1, tzinfo=UTC)
FAMILY = str(uuid.UUID(int=7))
CANONICAL_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00")
# Users, in the order the `trail` fixture makes them: root signs up first (id 1).
ROOT, BOB, CAROL = 1, 2, 3


def add_rows(app, rows: list[dict]) -> None:
    """Insert audit rows as any writer would: through the chain's trigger."""
    with app.app_context():
        db.session.execute(insert(TRAIL), rows)
        db.session.commit()


def add_users(app, *names: str) -> None:
    with app.app_context():
        for name in names:
            db.session.execute(
                text(
                    "INSERT INTO users (username, email, hashed_password) "
                    "VALUES (:name, :name || '@example.com', 'not-a-hash')"
                ),
                {"name": name},
            )
        db.session.commit()


def varied_rows(count: int = 60) -> list[dict]:
    """Rows with every filtered column spread over a few values; created_at out of id order."""
    actions = ["login_success", "login_failed", "note_created", "token_refreshed", "user_promoted"]
    targets = [("note", "7"), ("note", "8"), ("user", "2"), ("token_family", FAMILY), (None, None)]
    rows = []
    for n in range(count):
        target_type, target_id = targets[(n // 2) % 5]
        rows.append(
            {
                "action": actions[n % 5],
                "detail": f"row {n}",
                "user_id": [None, ROOT, BOB, CAROL][n % 4],
                "ip": ["10.0.0.1", "10.0.0.2", "2001:db8::7", None][n % 4 if n % 7 else 1],
                "method": "POST",
                "path": "/somewhere",
                "status_code": 200,
                "request_id": f"req-{n // 2:08d}",
                "target_type": target_type,
                "target_id": target_id,
                "changes": {"n": {"old": n, "new": n + 1}} if n % 2 else None,
                "created_at": BASE + timedelta(minutes=(n * 7) % count),
            }
        )
    return rows


@pytest.fixture
def trail(app, accounts):
    """An admin's headers, and a trail of 60 varied rows besides the admin's own."""
    headers = accounts.admin_headers("root")
    add_users(app, "bob", "carol")
    add_rows(app, varied_rows())
    return headers


def ids(response) -> list[int]:
    assert response.status_code == 200, response.get_json()
    return [log["id"] for log in response.get_json()["logs"]]


def walk(client, headers, query: str, before_id: int | None, page_size: int) -> list[int]:
    """Follow next_before_id from `before_id` to the last page; every id seen, in order."""
    seen = []
    while True:
        cursor = "" if before_id is None else f"&before_id={before_id}"
        response = client.get(f"/audit/logs?{query}&page_size={page_size}{cursor}", headers=headers)
        seen += ids(response)
        before_id = response.get_json()["next_before_id"]
        if before_id is None:
            return seen


def export(client, headers, query: str = "", export_format: str = "ndjson"):
    response = client.get(
        f"/audit/logs/export?format={export_format}&{query}", headers=headers, buffered=True
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def ndjson_records(response) -> list[dict]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def csv_records(response) -> list[dict]:
    """The rows of a CSV export as the stored values: the "'" against formulas taken away, and
    null where a cell was empty and unquoted (the csv module cannot tell; the text can)."""
    lines = response.get_data(as_text=True).split("\r\n")
    header, *rows = list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))
    records = []
    for line, row in zip(lines[1:], rows, strict=False):
        raw_cells = line.split(",")  # safe here: the tests' rows hold no commas in unquoted cells
        record = {}
        for name, value, raw in zip(header, row, raw_cells, strict=False):
            if raw == "":
                record[name] = None
            else:
                record[name] = value[1:] if value.startswith("'") else value
        records.append(record)
    return records


class Row:
    """A row read back from an export, with the stored types, for chain.row_hash."""

    def __init__(self, record: dict) -> None:
        for name, value in record.items():
            setattr(self, name, value)
        self.created_at = datetime.fromisoformat(record["created_at"])


# --- pages --------------------------------------------------------------------------------------


def test_the_listing_is_newest_first_by_id_even_when_created_at_is_not(client, trail, audit_rows):
    by_id = [row.id for row in reversed(audit_rows())]
    by_created_at = [row.id for row in sorted(audit_rows(), key=lambda r: r.created_at)][::-1]

    listed = ids(client.get("/audit/logs?page_size=100", headers=trail))

    assert listed == by_id
    assert listed != by_created_at


def test_a_numbered_page_has_its_total_and_the_cursor_of_the_next(client, trail, audit_rows):
    newest_first = [row.id for row in reversed(audit_rows())]

    body = client.get("/audit/logs?page=2&page_size=10", headers=trail).get_json()

    assert [log["id"] for log in body["logs"]] == newest_first[10:20]
    assert (body["total"], body["pages"], body["page"], body["page_size"]) == (
        len(newest_first),
        -(-len(newest_first) // 10),
        2,
        10,
    )
    assert body["next_before_id"] == newest_first[19]


def test_a_cursor_page_starts_below_before_id_and_leaves_out_total_and_pages(
    client, trail, audit_rows
):
    newest_first = [row.id for row in reversed(audit_rows())]

    body = client.get(f"/audit/logs?before_id={newest_first[5]}&page_size=10", headers=trail)

    assert set(body.get_json()) == {"logs", "page", "page_size", "next_before_id"}
    assert ids(body) == newest_first[6:16]
    assert body.get_json()["next_before_id"] == newest_first[15]


@pytest.mark.parametrize("cursor", [False, True])
def test_the_last_page_has_no_next_before_id(client, trail, audit_rows, cursor):
    oldest_ids = [row.id for row in audit_rows()][:5]
    query = f"before_id={oldest_ids[-1] + 1}" if cursor else "page=1000"

    body = client.get(f"/audit/logs?page_size=5&{query}", headers=trail).get_json()

    assert body["next_before_id"] is None
    if cursor:
        assert [log["id"] for log in body["logs"]] == oldest_ids[::-1]


def test_a_page_that_exactly_ends_the_trail_has_no_next_before_id(client, trail, audit_rows):
    oldest_ids = [row.id for row in audit_rows()][:6]

    body = client.get(f"/audit/logs?before_id={oldest_ids[-1]}&page_size=5", headers=trail)

    assert ids(body) == oldest_ids[:5][::-1]
    assert body.get_json()["next_before_id"] is None


def test_cursor_pages_never_repeat_or_skip_a_row_while_rows_arrive(
    app, client, accounts, trail, audit_rows
):
    writer = accounts.headers("writer")
    there_at_first = [row.id for row in reversed(audit_rows())]
    seen, before_id, pages = [], None, 0

    while True:
        cursor = "" if before_id is None else f"&before_id={before_id}"
        body = client.get(f"/audit/logs?page_size=7{cursor}", headers=trail).get_json()
        seen += [log["id"] for log in body["logs"]]
        pages += 1
        # Between two pages: a request that writes a row, rows from elsewhere, and the read's
        # own audit_read row.
        client.post("/notes", json={"text": f"after page {pages}"}, headers=writer)
        add_rows(app, varied_rows(3))
        before_id = body["next_before_id"]
        if before_id is None:
            break

    assert len(seen) == len(set(seen)), "a row came twice"
    assert seen == there_at_first
    assert pages == -(-len(there_at_first) // 7)
    assert len(audit_rows()) == len(there_at_first) + 5 * pages  # note, 3 rows, audit_read


# --- filters ------------------------------------------------------------------------------------

HALF_PAST = BASE + timedelta(minutes=30)
FILTERS = {
    "action=login_failed": lambda r: r.action == "login_failed",
    "action=login_failed&action=user_promoted": lambda r: (
        r.action in ("login_failed", "user_promoted")
    ),
    "action=user_promoted&action=user_promoted": lambda r: r.action == "user_promoted",
    f"user_id={BOB}": lambda r: r.user_id == BOB,
    "target_type=note": lambda r: r.target_type == "note",
    "target_type=note&target_id=7": lambda r: (r.target_type, r.target_id) == ("note", "7"),
    f"target_type=token_family&target_id={FAMILY}": lambda r: r.target_id == FAMILY,
    "target_type=user&target_id=7": lambda r: False,
    "ip=10.0.0.2": lambda r: r.ip == "10.0.0.2",
    "ip=::ffff:10.0.0.2": lambda r: r.ip == "10.0.0.2",
    "ip=2001:DB8:0:0::7": lambda r: r.ip == "2001:db8::7",
    "request_id=req-00000003": lambda r: r.request_id == "req-00000003",
    "since=2026-01-01T00:30:00Z": lambda r: r.created_at >= HALF_PAST,
    "until=2026-01-01T01:30:00%2B01:00": lambda r: r.created_at < HALF_PAST,
    "since=2026-01-01T00:10:00.5-00:00&until=2026-01-01T00:20:00Z": lambda r: (
        BASE + timedelta(minutes=10, seconds=0.5) <= r.created_at < BASE + timedelta(minutes=20)
    ),
    "action=login_failed&ip=10.0.0.2": lambda r: (r.action, r.ip) == ("login_failed", "10.0.0.2"),
    f"user_id={CAROL}&since=2026-01-01T00:30:00Z": lambda r: (
        r.user_id == CAROL and r.created_at >= HALF_PAST
    ),
    "action=note_created&action=token_refreshed&target_type=note": lambda r: (
        r.action in ("note_created", "token_refreshed") and r.target_type == "note"
    ),
}


@pytest.mark.parametrize("query", FILTERS)
def test_each_filter_and_their_combinations_leave_the_rows_they_name(
    client, trail, audit_rows, query
):
    expected = [row.id for row in reversed(audit_rows()) if FILTERS[query](row)]

    body = client.get(f"/audit/logs?{query}&page_size=100", headers=trail)

    assert ids(body) == expected
    assert body.get_json()["total"] == len(expected)
    assert query == "target_type=user&target_id=7" or expected, "the filter leaves nothing"


@pytest.mark.parametrize("query", FILTERS)
def test_a_filter_holds_on_every_cursor_page(client, trail, audit_rows, query):
    newest = audit_rows()[-1].id
    expected = [row.id for row in reversed(audit_rows()) if FILTERS[query](row)]

    seen = walk(client, trail, query, newest + 1, page_size=3)

    assert seen == expected


@pytest.mark.parametrize("query", ["action=login_failed&action=user_promoted", f"user_id={BOB}"])
def test_numbered_pages_of_a_filter_follow_one_another(client, trail, audit_rows, query):
    expected = [row.id for row in reversed(audit_rows()) if FILTERS[query](row)]

    pages = [
        ids(client.get(f"/audit/logs?{query}&page={n}&page_size=4", headers=trail))
        for n in (1, 2, 3)
    ]

    assert pages == [expected[0:4], expected[4:8], expected[8:12]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("action=note_exploded", "action"),
        ("action=login_failed&action=nope", "action"),
        ("&".join(["action=signup"] * (len(ACTIONS) + 1)), "action"),  # more than there are
        ("user_id=0", "user_id"),
        ("target_id=7", "target_id"),
        ("target_type=planet&target_id=7", "target_type"),
        ("target_type=note&target_id=7%20OR%201=1", "target_id"),
        ("target_type=note&target_id=" + "7" * 65, "target_id"),
        ("ip=10.0.0.256", "ip"),
        ("ip=10.0.0.01", "ip"),
        ("ip=fe80::1%25eth0", "ip"),
        ("ip=localhost", "ip"),
        ("request_id=short", "request_id"),
        ("request_id=has%20a%20space", "request_id"),
        ("request_id=" + "r" * 129, "request_id"),
        ("since=2026-01-01T00:00:00", "since"),
        ("since=2026-01-01", "since"),
        ("since=20260101T000000Z", "since"),
        ("since=2026-01-01T00:00:00%2B0100", "since"),
        ("since=2026-02-30T00:00:00Z", "since"),
        ("until=2026-01-01T00:00:00%2B24:00", "until"),
        ("until=9999-12-31T23:59:60Z", "until"),
        ("until=yesterday", "until"),
        ("before_id=0", "before_id"),
        ("before_id=2147483648", "before_id"),
        ("before_id=abc", "before_id"),
        ("before_id=5&before_id=6", "before_id"),
        ("page_size=101", "page_size"),
    ],
)
def test_a_bad_filter_or_cursor_answers_422_naming_it(client, trail, audit_rows, query, field):
    before = len(audit_rows())

    response = client.get(f"/audit/logs?{query}", headers=trail)

    assert response.status_code == 422
    assert response.is_json
    assert field in response.get_json()["errors"]["query"]
    assert len(audit_rows()) == before  # a refused read is no read


@pytest.mark.parametrize(
    "query", ["format=xml", "target_id=7", "ip=nowhere", "since=2026-01-01", "page=2"]
)
def test_a_bad_export_query_answers_422(client, trail, query):
    response = client.get(f"/audit/logs/export?{query}", headers=trail)

    assert response.status_code == 422
    assert response.is_json


# --- what reading records -------------------------------------------------------------------


def test_each_listing_records_one_audit_read_row_with_its_filters(client, trail, audit_rows):
    query = "action=login_failed&action=user_promoted&user_id=2&ip=::ffff:10.0.0.2"

    client.get(f"/audit/logs?{query}&since=2026-01-01T01:00:00%2B01:00", headers=trail)
    client.get("/audit/logs?before_id=40&page_size=5", headers=trail)

    first, second = audit_rows("audit_read")
    assert (first.user_id, first.method, first.path, first.status_code) == (
        ROOT,
        "GET",
        "/audit/logs",
        200,
    )
    assert first.changes == {
        "filters": {
            "action": ["login_failed", "user_promoted"],
            "user_id": 2,
            "ip": "10.0.0.2",
            "since": "2026-01-01T01:00:00+01:00",
        },
        "page": 1,
        "page_size": 20,
    }
    assert second.changes == {"filters": {}, "before_id": 40, "page": 1, "page_size": 5}


def test_every_filter_is_named_in_the_audit_read_row(client, trail, audit_rows):
    query = (
        "action=signup&user_id=3&target_type=token_family&target_id=abc-1&ip=2001:DB8::1"
        "&request_id=req.abc:123-x&since=2026-01-01T00:00:00.250Z&until=2026-02-01T00:00:00-05:00"
    )

    assert client.get(f"/audit/logs?{query}", headers=trail).status_code == 200

    (row,) = audit_rows("audit_read")
    assert row.changes["filters"] == {
        "action": ["signup"],
        "user_id": 3,
        "target_type": "token_family",
        "target_id": "abc-1",
        "ip": "2001:db8::1",
        "request_id": "req.abc:123-x",
        "since": "2026-01-01T00:00:00.250000+00:00",
        "until": "2026-02-01T00:00:00-05:00",
    }


def test_an_export_records_audit_read_and_audit_exported_before_its_first_byte(
    client, trail, audit_rows
):
    newest = audit_rows()[-1].id

    response = client.get(
        "/audit/logs/export?format=csv&action=login_failed&user_id=2", headers=trail, buffered=False
    )

    read, exported = audit_rows()[-2:]  # committed already, the body still unread
    filters = {"action": ["login_failed"], "user_id": 2}
    assert (read.action, read.changes) == ("audit_read", {"filters": filters})
    assert (exported.action, exported.changes) == (
        "audit_exported",
        {"filters": filters, "format": "csv", "through_id": newest},
    )
    assert exported.detail == f"csv export of the rows through id {newest}"
    assert response.headers["X-Audit-Through-Id"] == str(newest)
    response.get_data()
    response.close()


@pytest.mark.parametrize(
    "path",
    [
        "/audit/logs",
        "/audit/logs?before_id=5",
        "/audit/logs/export",
        "/audit/logs/export?format=csv",
    ],
)
def test_reading_the_trail_answers_403_to_a_normal_user_and_records_only_the_denial(
    client, accounts, audit_rows, path
):
    headers = accounts.headers("alice")

    response = client.get(path, headers=headers)

    assert response.status_code == 403
    assert response.is_json
    assert [row.action for row in audit_rows()][-1] == "access_denied"
    assert audit_rows("audit_read") == audit_rows("audit_exported") == []


@pytest.mark.parametrize("path", ["/audit/logs/export", "/audit/logs/export?format=csv"])
def test_the_export_without_a_token_answers_401(client, path):
    response = client.get(path)

    assert response.status_code == 401
    assert response.is_json


# --- the export ---------------------------------------------------------------------------------


def stored(app) -> dict[int, dict]:
    """Every row as the database holds it, by id, with created_at in the canonical form."""
    with app.app_context():
        rows = db.session.execute(TRAIL.select().order_by(TRAIL.c.id)).mappings().all()
    return {
        row["id"]: dict(row) | {"created_at": chain.utc_text(row["created_at"])} for row in rows
    }


def test_an_ndjson_export_holds_every_column_of_every_row_and_verifies_offline(app, client, trail):
    in_database = stored(app)

    response = export(client, trail)

    assert response.mimetype == "application/x-ndjson"
    assert "attachment" in response.headers["Content-Disposition"]
    records = ndjson_records(response)
    assert [record["id"] for record in records] == list(in_database)  # oldest first, all
    assert records == list(in_database.values())
    assert all(list(record) == list(EXPORT_COLUMNS) for record in records)
    assert all(CANONICAL_MOMENT.fullmatch(record["created_at"]) for record in records)
    # An auditor's check, with nothing but the export: each hash, and each link.
    walked = chain.walk((Row(record) for record in records), chain.ZERO_HASH)
    assert (walked.broken, walked.checked) == (None, len(records))


def test_a_csv_export_holds_every_column_of_every_row_and_verifies_offline(app, client, trail):
    in_database = stored(app)

    response = export(client, trail, export_format="csv")

    assert response.content_type == "text/csv; charset=utf-8"
    header = response.get_data(as_text=True).split("\r\n", 1)[0]
    assert header == ",".join(f'"{name}"' for name in EXPORT_COLUMNS)
    records = csv_records(response)
    assert [int(record["id"]) for record in records] == list(in_database)
    for record in records:
        row = in_database[int(record["id"])]
        changes = None if row["changes"] is None else chain.canonical_json(row["changes"]).decode()
        assert record == {
            name: None if value is None else str(value) for name, value in row.items()
        } | {"changes": changes}
    typed = [
        Row(
            record
            | {name: None if record[name] is None else int(record[name]) for name in INTEGERS}
            | {"changes": None if record["changes"] is None else json.loads(record["changes"])}
        )
        for record in records
    ]
    walked = chain.walk(typed, chain.ZERO_HASH)
    assert (walked.broken, walked.checked) == (None, len(records))


INTEGERS = ("id", "user_id", "status_code")


def test_a_csv_null_is_an_empty_cell_and_every_value_is_quoted(app, client, trail, audit_rows):
    (signup,) = audit_rows("signup")  # root's: its changes are null

    lines = export(client, trail, export_format="csv").get_data(as_text=True).split("\r\n")

    line = next(line for line in lines if line.startswith(f'"{signup.id}",'))
    cells = line.split(",")
    assert cells[EXPORT_COLUMNS.index("prev_hash")].startswith('"')
    assert cells[EXPORT_COLUMNS.index("changes")] == ""
    assert cells[EXPORT_COLUMNS.index("method")] == '"POST"'


@pytest.mark.parametrize("query", FILTERS)
def test_an_export_leaves_the_rows_the_filters_name_oldest_first(client, trail, audit_rows, query):
    expected = [row.id for row in audit_rows() if FILTERS[query](row)]

    records = ndjson_records(export(client, trail, query))

    assert [record["id"] for record in records] == expected


def test_an_export_ends_at_the_newest_row_when_it_began(app, client, trail, audit_rows):
    newest = audit_rows()[-1].id
    response = client.get("/audit/logs/export", headers=trail, buffered=False)

    add_rows(app, varied_rows(5))  # while it streams
    records = ndjson_records(response)

    assert records[-1]["id"] == newest == int(response.headers["X-Audit-Through-Id"])


def test_an_empty_export_is_a_header_or_nothing(client, trail):
    ndjson = export(client, trail, "user_id=4242")
    csv_export = export(client, trail, "user_id=4242", export_format="csv")

    assert ndjson.get_data() == b""
    assert csv_export.get_data(as_text=True) == ",".join(f'"{c}"' for c in EXPORT_COLUMNS) + "\r\n"


@pytest.mark.parametrize(
    "value",
    ['=HYPERLINK("http://evil")', "+1+2", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "'quoted"],
    ids=["equals", "plus", "minus", "at", "tab", "carriage-return", "quote"],
)
def test_a_csv_cell_a_spreadsheet_would_run_is_made_text(app, client, trail, value):
    add_rows(app, [{"action": "login_failed", "detail": value, "user_agent": value}])

    records = csv_records(export(client, trail, "action=login_failed", export_format="csv"))
    raw = export(client, trail, "action=login_failed", export_format="csv").get_data(as_text=True)

    quoted = '"' + "'" + value.replace('"', '""') + '"'
    assert raw.count(quoted) == 2  # detail and user_agent
    assert (records[-1]["detail"], records[-1]["user_agent"]) == (value, value)


def test_a_user_agent_sent_as_a_formula_is_exported_as_text(client, accounts, trail):
    accounts.signup("mallory", headers={"User-Agent": "=cmd|' /C calc'!A0"})

    raw = export(client, trail, "action=signup", export_format="csv").get_data(as_text=True)

    assert "\"'=cmd|' /C calc'!A0\"" in raw
    assert ',"=cmd' not in raw


def test_safe_csv_cells_are_left_as_they_are(app, client, trail):
    add_rows(app, [{"action": "login_failed", "detail": 'a1 = b2, said "x"'}])

    raw = export(client, trail, "action=login_failed", export_format="csv").get_data(as_text=True)

    assert '"a1 = b2, said ""x"""' in raw


@contextmanager
def statements_of(app):
    """Collect (SQL, parameters) of every statement the app's engine runs in the block."""
    with app.app_context():
        engine = db.engine
    seen = []

    def note(_connection, _cursor, statement, parameters, _context, _executemany):
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def test_an_export_reads_the_trail_in_batches_of_bounded_size(app, client, trail, audit_rows):
    add_rows(app, [{"action": "note_created", "detail": f"n{n}"} for n in range(2500)])
    expected = [row.id for row in audit_rows("note_created")]

    with statements_of(app) as statements:
        records = ndjson_records(export(client, trail, "action=note_created"))

    batches = [(sql, params) for sql, params in statements if "audit_logs.id >" in sql]
    assert [record["id"] for record in records] == expected
    assert len(expected) > 2 * EXPORT_BATCH_ROWS
    assert len(batches) == 3
    for _sql, params in batches:
        assert EXPORT_BATCH_ROWS in params.values()
    # Each batch goes on from the last row of the one before.
    assert [params["id_1"] for _sql, params in batches] == [
        0,
        expected[EXPORT_BATCH_ROWS - 1],
        expected[2 * EXPORT_BATCH_ROWS - 1],
    ]


def test_an_export_of_several_actions_reads_each_actions_index_range(app, client, trail):
    with statements_of(app) as statements:
        export(client, trail, "action=login_failed&action=user_promoted").get_data()

    (batch,) = [(sql, params) for sql, params in statements if "UNION ALL" in sql]
    sql, params = batch
    assert sql.count("LIMIT") == 3  # each action's range, and the merge
    assert list(params.values()).count(EXPORT_BATCH_ROWS) == 3


# --- cost and limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "budget"),
    [
        ("page_size=100", 4),  # the token's family with its user; the page; its count; audit_read
        ("page_size=100&before_id=50", 3),  # no count
        ("page_size=100&before_id=50&action=login_failed&action=user_promoted&ip=10.0.0.1", 3),
    ],
)
def test_a_listing_sends_a_fixed_number_of_statements(app, client, trail, query, budget):
    with app.app_context():
        engine = db.engine
    # Warm up every pooled connection (the pool hands out the longest idle first): one that a
    # CLI command used last would set the request's timeouts first, once.
    for _ in range(engine.pool.checkedin() + 1):
        client.get("/audit/logs", headers=trail)

    with counting_statements(engine) as statements:
        response = client.get(f"/audit/logs?{query}", headers=trail)

    assert response.status_code == 200
    assert len(statements) == budget, "\n".join(statements)


def test_exports_are_limited_per_admin_and_listings_are_not(app_with, client, accounts, audit_rows):
    limited = app_with(RATELIMIT_ENABLED=True, RATELIMIT_AUDIT_EXPORT="2 per minute")
    limited_client = limited.test_client()
    root = accounts.admin_headers("root")
    other = accounts.admin_headers("other")

    # Read each body whole: the test client stops at its first chunk, inside the stream's
    # contexts, which a later request would then inherit.
    exports = [
        limited_client.get("/audit/logs/export", headers=root, buffered=True) for _ in range(3)
    ]

    assert [response.status_code for response in exports] == [200, 200, 429]
    assert exports[2].is_json
    assert 1 <= int(exports[2].headers["Retry-After"]) <= 60
    assert limited_client.get("/audit/logs/export", headers=other, buffered=True).status_code == 200
    assert all(limited_client.get("/audit/logs", headers=root).status_code == 200 for _ in range(5))
    (row,) = audit_rows("rate_limited")
    assert row.detail == f"audit-exports limit (2 per 1 minute) for user {ROOT}"
    assert len(audit_rows("audit_exported")) == 3


def test_the_export_limit_defaults_to_the_documented_rate():
    assert Config.RATELIMIT_AUDIT_EXPORT == "10 per hour"


def test_the_export_documents_its_formats_and_its_429(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/audit/logs/export"]["get"]

    assert set(operation["responses"]["200"]["content"]) == {"application/x-ndjson", "text/csv"}
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    assert {"format", "action", "since", "until", "ip"} <= {
        p["name"] for p in operation["parameters"]
    }


def test_the_listing_documents_total_and_pages_as_optional(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]

    listing = schemas["AuditLogList"]
    assert set(listing["required"]) == {"logs", "page", "page_size", "next_before_id"}
    assert listing["properties"]["next_before_id"]["nullable"] is True


# --- on SQLite, the development default -------------------------------------------------------


def test_filters_cursors_and_the_export_work_on_sqlite(tmp_path, app_with):
    sqlite = app_with(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'devlab.db'}")
    with sqlite.app_context():
        upgrade()
    client = sqlite.test_client()
    headers = Accounts(sqlite, client).admin_headers("root")
    add_users(sqlite, "bob", "carol")
    add_rows(sqlite, varied_rows(20))
    query = "action=login_failed&action=user_promoted&since=2026-01-01T01:05:00%2B01:00"
    with sqlite.app_context():
        rows = db.session.execute(TRAIL.select().order_by(TRAIL.c.id.desc())).mappings().all()
    expected = [
        row["id"]
        for row in rows
        if row["action"] in ("login_failed", "user_promoted")
        and row["created_at"] >= BASE + timedelta(minutes=5)
    ]

    of_the_actions = [row for row in rows if row["action"] in ("login_failed", "user_promoted")]
    assert 0 < len(expected) < len(of_the_actions)  # `since` leaves some out

    listed = walk(client, headers, query, None, page_size=2)
    exported = ndjson_records(export(client, headers, query))

    assert listed == expected
    assert [record["id"] for record in exported] == expected[::-1]
