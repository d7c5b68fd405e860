"""`flask audit ...`: verify the chain, print signed heads and the public key, purge old rows."""

import json
import sys
from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import AppGroup

from devlab.audit import chain
from devlab.audit.trail import record_cli
from devlab.extensions import db

audit_cli = AppGroup("audit", help="The audit trail: verify its chain, sign heads, purge.")


def _require_chain() -> None:
    if db.engine.dialect.name != "postgresql":
        raise click.ClickException(
            "This database keeps no hash chain: the chain is PostgreSQL's (see the README)."
        )


@audit_cli.command("verify")
@click.option(
    "--head",
    "head_file",
    type=click.File("r"),
    help="A file of signed heads (one JSON line each, as `flask audit head` prints them): each "
    "must carry a valid signature and name a row the chain still holds with that hash.",
)
def verify(head_file) -> None:
    """Walk the whole chain, oldest row first, and check every link."""
    _require_chain()
    session = db.session
    first_prev_hash, anchor_id = chain.anchor(session)
    walked = chain.walk(chain.rows_in_id_order(session), first_prev_hash)
    if walked.broken is not None:
        click.echo(f"Checked {walked.checked} rows; broken at {walked.broken}.", err=True)
        sys.exit(1)
    failures = []
    if head_file is not None:
        failures = _check_heads(head_file, walked, anchor_id)
    for failure in failures:
        click.echo(failure, err=True)
    if failures:
        sys.exit(1)
    click.echo(f"{walked.checked} rows checked: ok")


def _check_heads(head_file, walked: chain.Walk, anchor_id: int | None) -> list[str]:
    public_key = chain.signing_key(current_app).public_key()
    newest_id = walked.newest.id if walked.newest is not None else 0
    failures = []
    for number, line in enumerate(head_file, start=1):
        if not line.strip():
            continue
        try:
            head = json.loads(line)
            head_id, head_hash = int(head["id"]), head["row_hash"]
        except (ValueError, TypeError, KeyError):
            failures.append(f"head on line {number}: not a head")
            continue
        name = f"head {head_id} (line {number})"
        if not chain.head_signature_holds(head, public_key):
            failures.append(f"{name}: bad signature")
            continue
        stored = chain.row_hash_of(db.session, head_id)
        if stored is None and anchor_id is not None and head_id <= anchor_id:
            click.echo(f"{name}: purged (at or before the purge anchor {anchor_id})")
        elif stored is None and head_id > newest_id:
            failures.append(f"{name}: chain ends early (the newest row is {newest_id})")
        elif stored is None:
            failures.append(f"{name}: row missing")
        elif stored != head_hash:
            failures.append(f"{name}: row changed (its hash is not the head's)")
    return failures


@audit_cli.command("head")
def head() -> None:
    """Print the chain's current head, signed, as one JSON line."""
    _require_chain()
    newest = chain.newest_row(db.session)
    if newest is None:
        raise click.ClickException("The audit trail is empty.")
    signed = chain.sign_head(newest, chain.signing_key(current_app))
    click.echo(json.dumps(signed, separators=(",", ":")))


@audit_cli.command("public-key")
def public_key() -> None:
    """Print the public key that verifies the heads (PEM, SubjectPublicKeyInfo)."""
    click.echo(chain.public_key_pem(chain.signing_key(current_app)), nl=False)


def _moment(value: str) -> datetime:
    """DATE as YYYY-MM-DD (midnight UTC) or an ISO 8601 timestamp with its offset."""
    try:
        if len(value) == len("YYYY-MM-DD"):
            return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise click.BadParameter(
            "give YYYY-MM-DD (midnight UTC) or an ISO 8601 timestamp with its offset, "
            "such as 2026-01-31T12:00:00+00:00.",
            param_hint="--before",
        )
    return moment


@audit_cli.command("purge")
@click.option(
    "--before", "before_text", required=True, metavar="DATE", help="Keep rows from then on."
)
def purge(before_text: str) -> None:
    """Delete the rows created before DATE (retention), oldest first, in short transactions.

    The trail records the purge (`audit_purged`, with the last row removed as its anchor), so
    `flask audit verify` still holds afterwards. DATE is YYYY-MM-DD (midnight UTC) or an ISO
    8601 timestamp with its offset, and not in the future.
    """
    _require_chain()
    before = _moment(before_text)
    if before > datetime.now(UTC):
        raise click.BadParameter("DATE is in the future.", param_hint="--before")

    def record(changes: dict) -> None:
        record_cli(
            "audit_purged",
            f"purged {changes['purged']} rows created before {changes['before']}",
            changes=changes,
        )

    done = chain.purge(db.session, before, record)
    if done is None:
        click.echo(f"No rows created before {chain.utc_text(before)}: nothing purged.")
    else:
        click.echo(
            f"Purged {done['purged']} rows created before {done['before']}; the oldest row left "
            f"follows row {done['anchor_id']}."
        )
