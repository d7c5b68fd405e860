"""`make bench`'s audit part: reading the trail at 10,000 rows and at 1,000,000 (issue 9, §4).

bench/run.py seeds SMALL rows into a database of their own (BENCH_SMALL_DATABASE, by default
BENCH_DATABASE's name with `_small`) and LARGE rows into the bench's, the first SMALL of them
the same rows; it then times every call on side A (LARGE rows) and on a DevLab server of the
small database, request by request in turn, so that both sizes meet the same load of a shared
machine, and exports all LARGE rows while it watches the workers' memory. Each call is
`GET /audit/logs?page_size=100` with a cursor deep in the table (`before_id` = DEEP_CURSOR,
far from the head at LARGE rows) alone and with each filter; the target is a p50 at LARGE rows
within TARGET_RATIO of the same call's at SMALL. The first pages (numbered, counted) are
measured too, for information: counting is what a cursor avoids.

The rows spread as a real trail would: 1,000 users, every action (token refreshes and logins
common, role changes rare), targets (notes, users, token families), a request id per row, a
few addresses per user, IPv6 too, one row every SPACING_SECONDS. The seed is chained by the
trigger's own functions (migration 0004) in one pass, then written with the triggers off (see
SEED_ROWS): the trail verifies, in a minute rather than three.

Run alone (both databases created and dropped; DevLab servers only, no B or C):

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/x .venv/bin/python bench/audit_reading.py
"""

import json
import re
import statistics
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from devlab.audit.trail import ACTIONS  # noqa: E402

SMALL, LARGE = 10_000, 1_000_000
DEEP_CURSOR = 5_000  # 995,000 rows above it at LARGE
SPACING_SECONDS = 2.5
REQUESTS_PER_CALL = 20
WARM_UP_REQUESTS = 3
TARGET_RATIO = 2
EXPORT_RSS_MAX_MB = 50
USERS = 1_000
# The filters whose first page (numbered, counted) is measured too, for information.
FIRST_PAGES = ("action", "user_id", "since + until")

# Out of 1,000 rows. Every action has at least one, so that 10,000 rows hold each a few times.
ACTION_WEIGHTS = {
    "token_refreshed": 230,
    "login_success": 154,
    "note_created": 140,
    "note_updated": 110,
    "note_deleted": 40,
    "login_failed": 60,
    "access_denied": 50,
    "audit_read": 40,
    "logout": 40,
    "rate_limited": 30,
    "signup": 20,
    "password_changed": 20,
    "logout_all": 15,
    "token_reuse_detected": 5,
    "user_promoted": 5,
    "user_demoted": 4,
    "user_deactivated": 4,
    "user_activated": 4,
    "admin_created": 3,
    "audit_exported": 4,
    "audit_purged": 2,
    "profile_changed": 6,
    "account_erased": 2,
    "users_listed": 2,
    "password_reset_requested": 4,
    "password_reset": 3,
    "password_reset_failed": 1,
    "user_created": 2,
}
assert set(ACTION_WEIGHTS) == set(ACTIONS) and sum(ACTION_WEIGHTS.values()) == 1000

# action: (method, path, status, what it is done to)
REQUEST_OF = {
    "token_refreshed": ("POST", "/token/refresh", 200, "token_family"),
    "login_success": ("POST", "/login", 200, None),
    "note_created": ("POST", "/notes", 201, "note"),
    "note_updated": ("PATCH", "/notes", 200, "note"),
    "note_deleted": ("DELETE", "/notes", 204, "note"),
    "login_failed": ("POST", "/login", 401, None),
    "access_denied": ("GET", "/admin/users", 403, None),
    "audit_read": ("GET", "/audit/logs", 200, None),
    "logout": ("POST", "/logout", 204, "token_family"),
    "rate_limited": ("POST", "/login", 429, None),
    "signup": ("POST", "/signup", 201, "user"),
    "password_changed": ("POST", "/me/password", 204, "user"),
    "logout_all": ("POST", "/logout/all", 204, "user"),
    "token_reuse_detected": ("POST", "/token/refresh", 401, "token_family"),
    "user_promoted": ("POST", "/admin/promote", 200, "user"),
    "user_demoted": ("POST", "/admin/demote", 200, "user"),
    "user_deactivated": ("POST", "/admin/users/deactivate", 200, "user"),
    "user_activated": ("POST", "/admin/users/activate", 200, "user"),
    "admin_created": (None, None, None, "user"),
    "audit_exported": ("GET", "/audit/logs/export", 200, None),
    "audit_purged": (None, None, None, None),
    "profile_changed": ("PATCH", "/me", 200, "user"),
    "account_erased": ("DELETE", "/me", 204, "user"),
    "users_listed": (None, None, None, None),
    "password_reset_requested": ("POST", "/password/forgot", 202, "user"),
    "password_reset": ("POST", "/password/reset", 204, "user"),
    "password_reset_failed": ("POST", "/password/reset", 400, None),
    "user_created": ("POST", "/admin/users", 201, "user"),
}
CHANGES_OF = {
    "user_promoted": {"is_admin": {"old": False, "new": True}},
    "user_demoted": {"is_admin": {"old": True, "new": False}},
    "user_deactivated": {"is_active": {"old": True, "new": False}},
    "user_activated": {"is_active": {"old": False, "new": True}},
    "profile_changed": {"email": "changed"},
    "audit_read": {"filters": {"action": ["login_failed"]}, "page": 1, "page_size": 20},
}
USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
    "curl/8.5.0",
    "python-requests/2.32.3",
]

# Columns of a row i (1, 2, ...), from a weighted pick k of 1..1000 and a user u of 1..USERS.
SEED_ROWS = """
SELECT setseed(%(seed)s);
CREATE TEMP TABLE seeded (LIKE audit_logs) ON COMMIT DROP;
INSERT INTO seeded (id, action, detail, ip, user_id, method, path, status_code, created_at,
                    request_id, user_agent, target_type, target_id, changes)
SELECT (SELECT coalesce(max(id), 0) FROM audit_logs) + i - %(first)s + 1,
       p.action,
       p.action || ' (seeded row ' || i || ')',
       CASE WHEN u %% 10 = 0 THEN '2001:db8::' || to_hex(u * 4 + i %% 3)
            ELSE '10.' || (u / 250) || '.' || (u %% 250) || '.' || (1 + i %% 3) END,
       CASE WHEN p.action IN ('admin_created', 'audit_purged')
                 OR (p.action = 'login_failed' AND i %% 3 = 0) THEN NULL
            ELSE u END,
       p.method,
       p.path,
       p.status,
       %(start)s::timestamptz + i * %(spacing)s * interval '1 second',
       md5(i::text),
       (%(agents)s::text[])[1 + u %% 3],
       p.target,
       CASE p.target
            WHEN 'note' THEN (1 + floor(r * 100000))::int::text
            WHEN 'user' THEN u::text
            WHEN 'token_family' THEN md5('family ' || u || ' ' || i / 50)::uuid::text
       END,
       p.changes
FROM (
    SELECT i, r, 1 + floor(random() * 1000)::int AS k, 1 + floor(random() * %(users)s)::int AS u
    FROM (SELECT i, random() AS r FROM generate_series(%(first)s, %(last)s) AS i) AS numbers
    ORDER BY i
) AS row_numbers
-- Each row's pick joined, not read out of the arrays: the k-th element of a text[] is found by
-- walking the k before it, five arrays of 1,000 for every row.
JOIN unnest(%(actions)s::text[], %(methods)s::text[], %(paths)s::text[], %(statuses)s::int[],
            %(targets)s::text[], %(changes)s::jsonb[])
     WITH ORDINALITY AS p(action, method, path, status, target, changes, k) USING (k)
ORDER BY i;
-- Chained as the trigger would chain them (the same functions, from the head on), then
-- written with the triggers off: the trigger's lock, head lookup and key check for each of a
-- million rows took 2 to 3 minutes, this takes well under one. Needs a superuser, as the
-- bench's database owner is.
CREATE TEMP TABLE chained (LIKE audit_logs) ON COMMIT DROP;
DO $$
DECLARE
    r audit_logs;
    previous text := coalesce(
        (SELECT row_hash FROM audit_logs ORDER BY id DESC LIMIT 1), repeat('0', 64));
BEGIN
    FOR r IN SELECT * FROM seeded ORDER BY id LOOP
        r.prev_hash := previous;
        r.row_hash := audit_row_hash(previous, r);
        INSERT INTO chained VALUES (r.*);
        previous := r.row_hash;
    END LOOP;
END
$$;
SET LOCAL session_replication_role = replica;
-- The reading indexes built once the rows are in, not row by row (the primary key stays).
CREATE TEMP TABLE reading_indexes ON COMMIT DROP AS
SELECT index.indexrelid::regclass::text AS name, pg_get_indexdef(index.indexrelid) AS definition
FROM pg_index AS index
WHERE index.indrelid = 'audit_logs'::regclass
  AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = index.indexrelid);
DO $$
DECLARE
    reading reading_indexes;
BEGIN
    FOR reading IN SELECT * FROM reading_indexes LOOP
        EXECUTE 'DROP INDEX ' || reading.name;
    END LOOP;
    INSERT INTO audit_logs SELECT * FROM chained ORDER BY id;
    FOR reading IN SELECT * FROM reading_indexes LOOP
        EXECUTE reading.definition;
    END LOOP;
END
$$;
SELECT setval(pg_get_serial_sequence('audit_logs', 'id'), (SELECT max(id) FROM audit_logs));
"""


def seed_parameters(first: int, last: int, start: datetime) -> dict:
    picks = [action for action, weight in ACTION_WEIGHTS.items() for _ in range(weight)]
    return {
        "actions": picks,
        "methods": [REQUEST_OF[a][0] for a in picks],
        "paths": [REQUEST_OF[a][1] for a in picks],
        "statuses": [REQUEST_OF[a][2] for a in picks],
        "targets": [REQUEST_OF[a][3] for a in picks],
        "changes": [json.dumps(CHANGES_OF[a]) if a in CHANGES_OF else None for a in picks],
        "agents": USER_AGENTS,
        "users": USERS,
        "start": start,
        "spacing": SPACING_SECONDS,
        "first": first,
        "last": last,
        # random() starts alike for the same first row: the first SMALL rows are the same in
        # every database, so that the same calls find the same rows.
        "seed": (first % 1000) / 1000,
    }


def seed_trail(connection, first: int, last: int, start: datetime) -> float:
    """Rows `first` to `last` (their ids, on an empty trail), chained; seconds."""
    began = time.monotonic()
    with connection, connection.cursor() as cursor:
        cursor.execute(SEED_ROWS, seed_parameters(first, last, start))
    return time.monotonic() - began


def trail_start() -> datetime:
    """When row 0 would have been written: the newest of LARGE rows is about now."""
    return datetime.now(UTC) - timedelta(seconds=LARGE * SPACING_SECONDS)


# --- the calls --------------------------------------------------------------------------------


def calls(connection, start: datetime) -> dict[str, str]:
    """The calls measured, as query strings, with values taken from rows below DEEP_CURSOR (so
    that each finds rows, at both sizes) and the same at both sizes."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT user_id, ip, request_id, target_id FROM audit_logs "
            "WHERE id < %s AND user_id IS NOT NULL AND target_type = 'note' "
            "ORDER BY id DESC LIMIT 1",
            (DEEP_CURSOR - 100,),
        )
        user_id, ip, request_id, note_id = cursor.fetchone()
    connection.rollback()
    since = (start + timedelta(seconds=2_000 * SPACING_SECONDS)).isoformat()
    until = (start + timedelta(seconds=6_000 * SPACING_SECONDS)).isoformat()
    deep = f"before_id={DEEP_CURSOR}"
    filters = {
        "action": "action=login_failed",
        "2 actions": "action=login_failed&action=user_promoted",
        "user_id": f"user_id={user_id}",
        "target": f"target_type=note&target_id={note_id}",
        "ip": f"ip={quote(ip)}",
        "request_id": f"request_id={request_id}",
        "since + until": f"since={quote(since)}&until={quote(until)}",
        "action + user_id": f"action=note_created&user_id={user_id}",
    }
    measured = {"cursor, no filter": deep}
    measured |= {f"cursor, {name}": f"{query}&{deep}" for name, query in filters.items()}
    measured["first page, no filter"] = ""
    for name in FIRST_PAGES:
        measured[f"first page, {name}"] = filters[name]
    return measured


def is_target(label: str) -> bool:
    return label.startswith("cursor")


def _timed_ms(base: str, token: str, query: str) -> float:
    url = f"{base}/audit/logs?page_size=100&{query}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (loopback)
        response.read()
    return (time.perf_counter() - began) * 1000


def measure(small: tuple, large: tuple, measured: dict[str, str]) -> tuple[dict, dict]:
    """Each call's p50 on both servers (each a (base URL, token)): WARM_UP_REQUESTS, then
    REQUESTS_PER_CALL sequential requests, one to each server in turn."""
    p50s = ({}, {})
    for label, query in measured.items():
        times = ([], [])
        for n in range(WARM_UP_REQUESTS + REQUESTS_PER_CALL):
            for side, (base, token) in enumerate((small, large)):
                elapsed = _timed_ms(base, token, query)
                if n >= WARM_UP_REQUESTS:
                    times[side].append(elapsed)
        for side in (0, 1):
            p50s[side][label] = statistics.median(times[side])
    return p50s


# --- the export's memory ------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def export_growth(base: str, token: str, workers: list[int]) -> dict:
    """Export every row as ndjson while sampling each worker's RSS every 20 ms: the largest
    growth of one worker over its RSS before, the rows, megabytes and seconds."""
    before = {pid: _rss_mb(pid) for pid in workers}
    peak = dict(before)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in workers:
                peak[pid] = max(peak[pid], _rss_mb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{base}/audit/logs/export?format=ndjson", headers={"Authorization": f"Bearer {token}"}
    )
    began, size, rows = time.monotonic(), 0, 0
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            while chunk := response.read(1 << 20):
                size += len(chunk)
                rows += chunk.count(b"\n")
    finally:
        done.set()
        sampler.join()
    return {
        "growth_mb": max(peak[pid] - before[pid] for pid in workers),
        "rows": rows,
        "mb": size / 2**20,
        "seconds": time.monotonic() - began,
    }


# --- the report ---------------------------------------------------------------------------------


def report_lines(small: dict, large: dict, export: dict, seeding: dict) -> list[str]:
    rows = [
        f"| `GET /audit/logs?page_size=100` | p50 ms at {SMALL:,} rows | p50 ms at {LARGE:,} "
        "rows | ratio |",
        "|---|---|---|---|",
    ]
    worst = 0.0
    for label, small_ms in small.items():
        ratio = large[label] / small_ms
        if is_target(label):
            worst = max(worst, ratio)
        rows.append(f"| {label} | {small_ms:.1f} | {large[label]:.1f} | {ratio:.2f}× |")
    met = worst <= TARGET_RATIO
    export_met = export["growth_mb"] <= EXPORT_RSS_MAX_MB
    return [
        f"Reading the audit trail (issue 9): p50 of {REQUESTS_PER_CALL} sequential requests "
        f"per call on side A, the cursor at id {DEEP_CURSOR:,} ({LARGE - DEEP_CURSOR:,} rows "
        f"above it at {LARGE:,}); first pages are numbered and counted, for information. Seeded "
        f"and chained with the trigger's own functions: {SMALL:,} rows in "
        f"{seeding['small']:.1f} s, the other {LARGE - SMALL:,} in {seeding['large']:.1f} s.",
        "",
        *rows,
        "",
        f"Export of all {export['rows']:,} rows as ndjson ({export['mb']:.0f} MB in "
        f"{export['seconds']:.1f} s, {export['rows'] / export['seconds']:,.0f} rows/s): the "
        f"worker's RSS grew by {export['growth_mb']:.1f} MB at most.",
        "",
        "Targets (issue 9):",
        f"- {'met' if met else 'NOT MET'}: every cursor call at {LARGE:,} rows within "
        f"{worst:.2f}× its p50 at {SMALL:,} (target ≤ {TARGET_RATIO}×)",
        f"- {'met' if export_met else 'NOT MET'}: exporting {export['rows']:,} rows grew a "
        f"worker's RSS by {export['growth_mb']:.1f} MB (target ≤ {EXPORT_RSS_MAX_MB} MB)",
    ]


# --- alone ------------------------------------------------------------------------------------


def main() -> int:
    """The audit part alone: its own database and a DevLab server (no B, no C)."""
    from bench import run

    url = run.bench_database_url()
    small_url = run.small_database_url(url)
    with run.fresh_database(url), run.fresh_database(small_url):
        lines = run.audit_reading_part(url, small_url)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
