"""The audit trail: views name what a request did, one hook writes it.

`audit("note_updated", ..., target=("note", id), changes=...)` only notes the event. After the
response is made, the hook `commit_request_with_its_audit_rows` adds an AuditLog row per event
(actor, target, changes, client address and user agent, method, path, status) and commits the
request's change together with its rows, so neither lands without the other. PostgreSQL chains
each row as it goes in (devlab/audit/chain.py). It is the one commit of every request, which is
why views never commit. A failed request rolls its change back; only the failure actions are
still written. CLI commands use `record_cli`, which has no request to read.

The trail names users by id, never by username or email: it is append-only, and outlives an
erasure (PATCH and DELETE /me). An attempted username that is an account's is recorded as that
account's id. Anything else typed (often a password put in the username box) is recorded as its
`pseudonym`, which tells repeated attempts apart and keeps nothing readable.
"""

import hashlib
import hmac
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from flask_jwt_extended import get_current_user
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from devlab import metrics
from devlab.client import client_ip
from devlab.db_transactions import COMMITS
from devlab.errors import database_error_response
from devlab.extensions import db
from devlab.models import AuditLog, User
from devlab.request_id import current_request_id

ACTIONS = (
    "signup",
    "login_success",
    "login_failed",
    "note_created",
    "note_updated",
    "note_deleted",
    "user_promoted",
    "access_denied",
    "admin_created",
    "token_refreshed",
    "token_reuse_detected",
    "logout",
    "logout_all",
    "password_changed",
    "user_demoted",
    "user_deactivated",
    "user_activated",
    "rate_limited",
    "audit_read",
    "audit_exported",
    "audit_purged",
    "profile_changed",
    "account_erased",
    "users_listed",
    "password_reset_requested",
    "password_reset",
    "password_reset_failed",
    "user_created",
)
# Written even though the request failed: the failure is what they record.
FAILURE_ACTIONS = frozenset(
    {
        "login_failed",
        "access_denied",
        "token_reuse_detected",
        "rate_limited",
        "password_reset_failed",
    }
)


# What an action was done to: ("user", id), ("note", id) or ("token_family", id).
TARGET_TYPES = ("user", "note", "token_family")
Target = tuple[str, int | str]
USER_AGENT_MAX = 256


@dataclass(frozen=True)
class AuditEvent:
    action: str
    detail: str | None
    actor: User | None
    target: Target | None
    changes: dict | None


def _token_user() -> User | None:
    try:
        return get_current_user()
    except RuntimeError:  # no token was verified in this request
        return None


_TOKEN_USER = object()


def audit(
    action: str,
    detail: str | None = None,
    *,
    actor: User | None = _TOKEN_USER,
    target: Target | None = None,
    changes: dict | None = None,
) -> None:
    """Note that this request did `action`; the actor is the token's user unless named.

    Only signup and login name the actor, since their caller holds no token yet. `changes`
    is `{"field": {"old": ..., "new": ...}}`, never a secret or a note's text (see changed()).
    """
    if action not in ACTIONS:
        raise ValueError(f"Unknown audit action {action!r}")
    if target is not None and target[0] not in TARGET_TYPES:
        raise ValueError(f"Unknown audit target type {target[0]!r}")
    if actor is _TOKEN_USER:
        actor = _token_user()
    g.setdefault("audit_events", []).append(AuditEvent(action, detail, actor, target, changes))


def changed(field: str, old, new) -> dict:
    """The `changes` of one field: {field: {"old": old, "new": new}}, or {} if it stayed."""
    return {} if old == new else {field: {"old": old, "new": new}}


PSEUDONYM_KEY = "devlab.pseudonym_key"
PSEUDONYM_HEX_DIGITS = 16


def pseudonym(typed: str) -> str:
    """A keyed hash of `typed` (HMAC-SHA256, its first 16 hex digits), the same in any case.

    The key is derived from JWT_SECRET_KEY, so nobody without the server's key can test guesses
    against a pseudonym; a new JWT key gives every name a new pseudonym.
    """
    extensions = current_app.extensions
    if PSEUDONYM_KEY not in extensions:
        secret = current_app.config["JWT_SECRET_KEY"].encode()
        extensions[PSEUDONYM_KEY] = hmac.digest(secret, b"devlab audit pseudonyms", "sha256")
    digest = hmac.new(extensions[PSEUDONYM_KEY], typed.lower().encode(), hashlib.sha256)
    return digest.hexdigest()[:PSEUDONYM_HEX_DIGITS]


def attempted_username(typed: str, user: User | None) -> str:
    """How the trail names the username a request tried: by the account's id if it is one's."""
    return f"user {user.id}" if user is not None else f"unknown username {pseudonym(typed)}"


def keep_changes_despite_failure() -> None:
    """Commit this request's changes although it answers with an error.

    For a failure that is itself a security measure, such as revoking a token family when a
    used refresh token comes back: the revocation must outlive the 401 that reports it.
    """
    g.keep_changes_despite_failure = True


def commit_request_with_its_audit_rows(response: Response) -> Response:
    events: list[AuditEvent] = g.pop("audit_events", [])
    keep_changes = response.status_code < 400 or g.pop("keep_changes_despite_failure", False)
    if keep_changes:
        rows = [_row_for(event, response) for event in events]
    else:
        rows = [_row_for(event, response) for event in events if event.action in FAILURE_ACTIONS]
        db.session.rollback()
        if not rows:
            return response
    try:
        if rows:
            # The request's own changes go first: the audit rows take the chain's lock
            # (migration 0004) until the commit, so nothing that could wait for a row lock
            # may come between them and it.
            db.session.flush()
            db.session.execute(ADD_AUDIT_ROWS, rows)
        db.session.commit()  # sends nothing if the rows' INSERT brought the COMMIT
        metrics.audit_rows_committed(rows)
    except SQLAlchemyError as error:
        if keep_changes:
            # The change is lost (or, if the answer to its commit never came, its fate unknown
            # here), so the client must not be told it was made.
            return database_error_response(error)
        db.session.rollback()
        current_app.logger.error(
            "Could not record %s: %s",
            ", ".join(row["action"] for row in rows),
            type(error).__name__,
        )
    return response


# The rows go in as one plain INSERT: they are never read back in the request, so the ORM's
# unit of work (an object per row, its state, a flush) would be cost without use. A single
# row's INSERT carries the COMMIT in its own message (devlab/db_transactions.py), so that the
# chain's lock it takes is not held across a round trip to this worker.
# Inline: without the RETURNING of the new id that SQLAlchemy would add to a single row's INSERT.
ADD_AUDIT_ROWS = insert(AuditLog.__table__).inline().execution_options(**{COMMITS: True})


def _row_for(event: AuditEvent, response: Response) -> dict:
    target_type, target_id = event.target if event.target is not None else (None, None)
    return {
        "action": event.action,
        "detail": event.detail,
        "user_id": event.actor.id if event.actor is not None else None,
        "ip": _recorded_address(),
        "method": request.method,
        "path": request.path,
        "status_code": response.status_code,
        "request_id": current_request_id(),
        "user_agent": request.headers.get("User-Agent", "")[:USER_AGENT_MAX] or None,
        "target_type": target_type,
        "target_id": None if target_id is None else str(target_id),
        "changes": event.changes,
    }


def _recorded_address() -> str | None:
    ip = client_ip()
    return None if ip is None else str(ip)


def record_cli(
    action: str, detail: str, *, target: Target | None = None, changes: dict | None = None
) -> None:
    """Add the audit row of a CLI command; the command commits it with its change.

    A command has no acting user, client address or request, so those stay null.
    """
    target_type, target_id = target if target is not None else (None, None)
    db.session.add(
        AuditLog(
            action=action,
            detail=f"via CLI: {detail}",
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            changes=changes,
        )
    )


def init_app(app: Flask) -> None:
    app.after_request(commit_request_with_its_audit_rows)
