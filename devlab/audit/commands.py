"""`flask audit ...`: verify the chain, print signed heads and the public key, purge old rows."""

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from devlab.audit import chain
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
