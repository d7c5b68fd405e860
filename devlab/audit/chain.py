"""The audit trail's hash chain: its encoding, the walk that verifies it, and signed heads.

PostgreSQL writes the chain (the trigger `audit_logs_chain` of migration 0004, whose SQL
function `audit_row_canonical` writes the same bytes as `canonical` here); this module reads it.

    canonical(row) = UTF-8 of json.dumps({every stored column but the two hashes},
                                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                     with created_at as UTC "YYYY-MM-DDTHH:MM:SS.ffffff+00:00"
    row_hash       = sha256(prev_hash + "\\n" + canonical(row)), lowercase hex
    prev_hash      = the row_hash of the row with the next smaller id; 64 zeros for the first
                     row, or the anchor_hash of the newest `audit_purged` row after a purge

A head is `{"id", "row_hash", "at", "signature"}`: Ed25519 (the `cryptography` package) over
the canonical JSON of `{"at", "id", "row_hash"}`, in standard padded base64. A monitor that keeps
heads catches what the chain alone cannot show: its newest rows deleted, or the whole chain
rewritten from some row on.

Written here rather than taken from a library: no maintained package verifies a hash chain
kept in SQL; the parts that are well-known algorithms (SHA-256, Ed25519, JSON) are hashlib,
`cryptography` and json.
"""

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import Flask
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from devlab.models import AuditLog

ZERO_HASH = "0" * 64
# Every stored column of audit_logs but the two hashes, in the canonical encoding.
CANONICAL_COLUMNS = (
    "id",
    "action",
    "detail",
    "ip",
    "user_id",
    "method",
    "path",
    "status_code",
    "created_at",
    "request_id",
    "user_agent",
    "target_type",
    "target_id",
    "changes",
)
PURGED = "audit_purged"
CHANGED = "row changed (its hash does not match its content)"
INSERTED = "row inserted (the rows around it link past it)"
BATCH_ROWS = 5_000
SIGNING_KEY = "devlab.audit_signing_key"


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(row) -> bytes:
    """The bytes a row's hash covers (`row` is anything with the columns as attributes)."""
    values = {name: getattr(row, name) for name in CANONICAL_COLUMNS}
    if values["created_at"] is not None:
        values["created_at"] = utc_text(values["created_at"])
    return canonical_json(values)


def row_hash(prev_hash: str, row) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical(row)).hexdigest()


# --- verifying the chain ---------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The first link that does not hold: the row's id and what is wrong with it."""

    row_id: int | None
    problem: str

    def __str__(self) -> str:
        return f"row {self.row_id}: {self.problem}" if self.row_id is not None else self.problem


@dataclass(frozen=True)
class Walk:
    checked: int
    newest: object | None  # the last row checked (its id and row_hash)
    broken: Break | None


TRAIL = AuditLog.__table__


def anchor(session: Session) -> tuple[str, int | None]:
    """What the oldest row must name as its prev_hash: the anchor of the newest purge, or zeros.

    Returns that hash and the id of the last row purged (None when nothing ever was)."""
    changes = session.scalar(
        select(TRAIL.c.changes).where(TRAIL.c.action == PURGED).order_by(TRAIL.c.id.desc()).limit(1)
    )
    if not changes:
        return ZERO_HASH, None
    return changes.get("anchor_hash", ZERO_HASH), changes.get("anchor_id")


def rows_in_id_order(session: Session, batch: int = BATCH_ROWS) -> Iterator:
    """Every row, oldest first, read in batches by id (keyset): memory stays flat at any size.

    Plain rows, not ORM objects: a million of them verify in seconds instead of minutes."""
    after = 0
    while True:
        rows = session.execute(
            select(TRAIL).where(TRAIL.c.id > after).order_by(TRAIL.c.id).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].id


def newest_row(session: Session):
    """The chain's head row (its id and row_hash), or None if the trail is empty."""
    return session.execute(
        select(TRAIL.c.id, TRAIL.c.row_hash).order_by(TRAIL.c.id.desc()).limit(1)
    ).first()


def row_hash_of(session: Session, row_id: int) -> str | None:
    return session.scalar(select(TRAIL.c.row_hash).where(TRAIL.c.id == row_id))


def walk(rows: Iterable, first_prev_hash: str) -> Walk:
    """Check every link of `rows` (oldest first); stop at the first that does not hold.

    A row whose hash does not match its own content was changed. A row whose prev_hash is not
    the previous row's hash either was put in (the next row links past it, to the previous
    one) or follows a missing row (its prev_hash names no row there is).
    """
    iterator = iter(rows)
    expected, checked = first_prev_hash, 0
    previous, before_previous_hash = None, None
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        if row_hash(current.prev_hash or "", current) != current.row_hash:
            return Walk(checked, previous, Break(current.id, CHANGED))
        if current.prev_hash != expected:
            if previous is not None and current.prev_hash == before_previous_hash:
                broken = Break(previous.id, INSERTED)
            elif following is not None and following.prev_hash == expected:
                broken = Break(current.id, INSERTED)
            elif previous is None:
                broken = Break(current.id, "rows missing before it (it does not link to the start)")
            else:
                broken = Break(
                    current.id, f"row missing before it (it does not link to row {previous.id})"
                )
            return Walk(checked, previous, broken)
        before_previous_hash = expected
        expected, checked, previous = current.row_hash, checked + 1, current
        current = following
    return Walk(checked, previous, None)


# --- retention -------------------------------------------------------------------------------

PURGE_BATCH_ROWS = 10_000


def purge_cutoff(session: Session, before: datetime):
    """The last row a purge of the rows created before `before` removes: the chain's prefix up
    to the first row created at or after `before` (ids and times may disagree by a little,
    and a hole in the chain would break it). None if there is nothing to purge."""
    first_kept = session.scalar(select(func.min(TRAIL.c.id)).where(TRAIL.c.created_at >= before))
    last = select(TRAIL.c.id, TRAIL.c.row_hash).order_by(TRAIL.c.id.desc()).limit(1)
    if first_kept is not None:
        last = last.where(TRAIL.c.id < first_kept)
    return session.execute(last).first()


def purge(session: Session, before: datetime, record) -> dict | None:
    """Delete the rows created before `before`, oldest first, PURGE_BATCH_ROWS per transaction.

    Each transaction sets `devlab.audit_purge`, which the append-only trigger lets DELETE
    through for that transaction alone. The last one also appends the `audit_purged` row
    (through `record(changes)`), whose anchor is the last row removed: `verify` then accepts
    the oldest row left, which names that row's hash as its prev_hash. An interrupted purge
    leaves rows missing at the start, which `verify` reports until the purge is run again.
    """
    cutoff = purge_cutoff(session, before)
    session.rollback()  # no transaction held while deleting: each batch is its own
    if cutoff is None:
        return None
    purged = 0
    while True:
        session.execute(text("SET LOCAL devlab.audit_purge = 'on'"))
        batch = select(TRAIL.c.id).where(TRAIL.c.id <= cutoff.id).order_by(TRAIL.c.id)
        upper = session.scalar(select(func.max(batch.limit(PURGE_BATCH_ROWS).subquery().c.id)))
        if upper is None:  # everything up to the anchor is gone already (a purge run again)
            session.rollback()
            break
        purged += session.execute(delete(TRAIL).where(TRAIL.c.id <= upper)).rowcount
        if upper == cutoff.id:
            changes = {
                "purged": purged,
                "before": utc_text(before),
                "anchor_id": cutoff.id,
                "anchor_hash": cutoff.row_hash,
            }
            record(changes)
            session.commit()
            return changes
        session.commit()
    return None


# --- signed heads ----------------------------------------------------------------------------


def signed_payload(head: dict) -> bytes:
    return canonical_json({"at": head["at"], "id": head["id"], "row_hash": head["row_hash"]})


def signing_key(app: Flask) -> Ed25519PrivateKey:
    """The app's Ed25519 key (AUDIT_SIGNING_KEY, checked by config.py), loaded once."""
    if SIGNING_KEY not in app.extensions:
        pem = app.config["AUDIT_SIGNING_KEY"].encode()
        app.extensions[SIGNING_KEY] = serialization.load_pem_private_key(pem, password=None)
    return app.extensions[SIGNING_KEY]


def public_key_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def sign_head(newest, key: Ed25519PrivateKey, at: datetime | None = None) -> dict:
    """The signed head for `newest` (a row with id and row_hash), signed now unless `at`."""
    head = {"id": newest.id, "row_hash": newest.row_hash, "at": utc_text(at or datetime.now(UTC))}
    head["signature"] = base64.b64encode(key.sign(signed_payload(head))).decode("ascii")
    return head


def head_signature_holds(head: dict, public_key: Ed25519PublicKey) -> bool:
    try:
        signature = base64.b64decode(head["signature"], validate=True)
        public_key.verify(signature, signed_payload(head))
    except (InvalidSignature, ValueError, TypeError, KeyError, binascii.Error):
        return False
    return True
