"""Reading the audit trail at any size: its filters, pages in id order, and the export.

The trail's order is its ids' (the chain's, devlab/audit/chain.py). A page is read from a cursor
on, in id order, along the index of its filter (migration 0005), so its cost does not grow with
the rows before or after it:

- GET /audit/logs is newest first. `before_id` starts a page below a row (keyset: a row
  written meanwhile has a larger id, so pages neither repeat nor skip a row); without it, the
  page is numbered and counted (`total`, `pages`), which costs a read of every matching row.
  Either way the page fetches one row more than it shows, to know whether a next page exists.
- The export is oldest first, in batches of EXPORT_BATCH_ROWS by `id > last id sent`, each
  batch one short statement on a connection borrowed for it alone, so neither memory nor the
  database's statement timeout grows with the trail, and a slow client holds no connection.

Several `action`s read one index range per action and merge them (UNION ALL of top-N reads):
`action IN (...)` would make PostgreSQL read every matching row past the cursor and sort them.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
from flask import Response, stream_with_context
from sqlalchemy import Select, func, select, union_all

from devlab.audit.chain import canonical_json, utc_text
from devlab.extensions import db
from devlab.models import AuditLog, User

TRAIL = AuditLog.__table__
ACTOR = User.__table__.alias("actor")
FILTERS = ("action", "user_id", "target_type", "target_id", "ip", "request_id", "since", "until")
EXPORT_BATCH_ROWS = 1000
# Every stored column, the hashes included, in the table's order.
EXPORT_COLUMNS = tuple(column.name for column in TRAIL.columns)
EXPORT_MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv"}  # csv: UTF-8
THROUGH_ID_HEADER = "X-Audit-Through-Id"
# A spreadsheet runs a cell that begins with one of these as a formula (CSV injection); "'"
# makes it text. A cell that begins with "'" gets one too, so that a reader can always take
# the first "'" away and have the stored value.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


# --- filters ----------------------------------------------------------------------------------


def actions_of(filters: dict) -> list[str]:
    return list(dict.fromkeys(filters.get("action") or ()))


def _conditions(filters: dict) -> list:
    """Every filter given but `action`, as SQL conditions."""
    conditions = []
    for name in ("user_id", "target_type", "target_id", "ip", "request_id"):
        if name in filters:
            conditions.append(TRAIL.c[name] == filters[name])
    if "since" in filters:
        conditions.append(TRAIL.c.created_at >= _in_utc(filters["since"]))
    if "until" in filters:
        conditions.append(TRAIL.c.created_at < _in_utc(filters["until"]))
    return conditions


def _in_utc(moment: datetime) -> datetime:
    """PostgreSQL compares moments whatever their offsets; SQLite compares the text it stores,
    which is UTC. A moment that has no UTC form in Python (the first hours of year 1) is kept."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return moment


def recorded_filters(filters: dict) -> dict:
    """The filters given, names and values, as the `audit_read` row keeps them (JSON)."""
    recorded = {}
    for name in FILTERS:
        if name not in filters:
            continue
        value = filters[name]
        if name == "action":
            value = actions_of(filters)
        elif name in ("since", "until"):
            value = value.isoformat()
        recorded[name] = value
    return recorded


def reading_of(query: dict) -> dict:
    """What a read asked for, as its `audit_read` row keeps it: the filters, and the page."""
    paging = {name: query[name] for name in ("before_id", "page", "page_size") if name in query}
    return {"filters": recorded_filters(query)} | paging


def in_id_order(
    filters: dict, *, newest_first: bool, limit: int, offset: int = 0, bounds: tuple = ()
) -> Select:
    """The rows that `filters` and `bounds` (conditions on the id) leave, in id order."""
    conditions = [*_conditions(filters), *bounds]
    actions = actions_of(filters)
    order = TRAIL.c.id.desc() if newest_first else TRAIL.c.id
    if len(actions) <= 1:
        if actions:
            conditions.append(TRAIL.c.action == actions[0])
        return select(TRAIL).where(*conditions).order_by(order).limit(limit).offset(offset or None)
    # Each read as a subquery of its own: SQLite takes no LIMIT on a member of a UNION.
    each_action = [
        select(
            select(TRAIL)
            .where(TRAIL.c.action == action, *conditions)
            .order_by(order)
            .limit(offset + limit)
            .subquery()
        )
        for action in actions
    ]
    merged = union_all(*each_action).subquery("each_action")
    merged_order = merged.c.id.desc() if newest_first else merged.c.id
    return select(merged).order_by(merged_order).limit(limit).offset(offset or None)


def _count(filters: dict):
    conditions = _conditions(filters)
    actions = actions_of(filters)
    if actions:
        conditions.append(TRAIL.c.action.in_(actions))
    return select(func.count()).select_from(TRAIL).where(*conditions)


# --- the listing ------------------------------------------------------------------------------


def page_of_the_trail(query: dict) -> dict:
    """The page `query` (a loaded AuditQuerySchema) asks for, newest first."""
    page, page_size, before_id = query["page"], query["page_size"], query.get("before_id")
    bounds = () if before_id is None else (TRAIL.c.id < before_id,)
    statement = in_id_order(
        query,
        newest_first=True,
        limit=page_size + 1,
        offset=(page - 1) * page_size,
        bounds=bounds,
    )
    rows = db.session.execute(with_actors_usernames(statement)).mappings().all()
    logs = rows[:page_size]
    result = {
        "logs": logs,
        "page": page,
        "page_size": page_size,
        "next_before_id": logs[-1]["id"] if len(rows) > page_size else None,
    }
    if before_id is None:
        total = db.session.scalar(_count(query))
        result |= {"total": total, "pages": -(-total // page_size)}
    return result


def with_actors_usernames(page: Select) -> Select:
    """The rows of `page` (newest first), each with its actor's username as it is now.

    The rows name users by id only (devlab/audit/trail.py); the name is joined in the same
    statement, after the page's LIMIT, so it costs one primary-key lookup per row shown and no
    query of its own. An erased account's name is `deleted-<id>`.
    """
    rows = page.subquery("page")
    return (
        select(rows, ACTOR.c.username)
        .outerjoin(ACTOR, ACTOR.c.id == rows.c.user_id)
        .order_by(rows.c.id.desc())
    )


# --- the export -------------------------------------------------------------------------------


def newest_id() -> int:
    """The id of the newest row, 0 when there is none: where an export that begins now ends."""
    return db.session.scalar(select(func.max(TRAIL.c.id))) or 0


def export_response(query: dict, through_id: int) -> Response:
    """The export `query` (a loaded AuditExportQuerySchema) asks for, streamed: every row that
    matches, oldest first, up to `through_id`.

    Nothing is read before the response leaves the view, so the request's hook has committed
    its audit rows by the time the first byte is sent: an export that was streamed was
    recorded. The batches run inside the request's contexts (stream_with_context), with the
    app's settings and statement timeout, on connections of their own: the request's session
    was removed when the response left the view.
    """
    export_format = query["format"]
    lines = ndjson_lines if export_format == "ndjson" else csv_lines
    body = stream_with_context(lines(_batches(query, through_id)))
    response = Response(body, mimetype=EXPORT_MEDIA_TYPES[export_format])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="audit-logs-through-{through_id}.{export_format}"'
    )
    response.headers[THROUGH_ID_HEADER] = str(through_id)
    return response


def _batches(filters: dict, through_id: int) -> Iterator[list]:
    """The rows to export, oldest first, EXPORT_BATCH_ROWS at a time."""
    after = 0
    while True:
        statement = in_id_order(
            filters,
            newest_first=False,
            limit=EXPORT_BATCH_ROWS,
            bounds=(TRAIL.c.id > after, TRAIL.c.id <= through_id),
        )
        with db.engine.connect() as connection:
            rows = connection.execute(statement).all()
        if rows:
            yield rows
        if len(rows) < EXPORT_BATCH_ROWS:
            return
        after = rows[-1].id


def ndjson_lines(batches: Iterator[list]) -> Iterator[bytes]:
    """One JSON object a line, every column by name; `created_at` in the chain's canonical
    form (UTC, microseconds, `+00:00`), `changes` as the object it is."""
    for rows in batches:
        yield b"".join(_ndjson_line(row) for row in rows)


def _ndjson_line(row) -> bytes:
    record = dict(zip(EXPORT_COLUMNS, row, strict=True))  # a tenth quicker than _asdict()
    record["created_at"] = utc_text(record["created_at"])
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:  # a number in `changes` beyond 64 bits, written by hand
        return (json.dumps(record, ensure_ascii=False) + "\n").encode()


def csv_lines(batches: Iterator[list]) -> Iterator[bytes]:
    """RFC 4180 CSV with a header line: every value quoted, a null an empty unquoted cell, so
    that null and "" differ; `changes` as canonical JSON, `created_at` as in ndjson. A value
    that a spreadsheet would take for a formula starts with "'" (see FORMULA_STARTS)."""
    yield _csv_line(EXPORT_COLUMNS)
    for rows in batches:
        yield b"".join(_csv_line(_csv_cells(row)) for row in rows)


def _csv_cells(row) -> list:
    cells = list(row)
    cells[CREATED_AT] = utc_text(cells[CREATED_AT])
    if cells[CHANGES] is not None:
        cells[CHANGES] = canonical_json(cells[CHANGES]).decode()
    return cells


CREATED_AT = EXPORT_COLUMNS.index("created_at")
CHANGES = EXPORT_COLUMNS.index("changes")


def csv_cell(value) -> str:
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    if text.startswith(FORMULA_STARTS):
        text = "'" + text
    return '"' + text.replace('"', '""') + '"'


def _csv_line(cells) -> bytes:
    return (",".join([csv_cell(cell) for cell in cells]) + "\r\n").encode()
