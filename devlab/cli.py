"""Commands: the first admin without hand-written SQL, housekeeping of revocations, and the
audit trail's (devlab/audit/commands.py)."""

import sys

import click
from flask import Flask
from flask.cli import with_appcontext
from marshmallow import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, ProgrammingError

from devlab.audit.commands import audit_cli
from devlab.audit.trail import changed, record_cli
from devlab.auth.schemas import SignupSchema
from devlab.auth.tokens import prune_expired_families
from devlab.errors import conflict_message
from devlab.extensions import db
from devlab.models import User
from devlab.password.reset import prune_expired_reset_links


@click.command("promote-admin")
@click.argument("username")
@with_appcontext
def promote_admin(username: str) -> None:
    """Give the existing user USERNAME the admin role."""
    user = User.by_username(username)
    if user is None:
        raise click.ClickException(f"No user named {username!r}.")
    was_admin = user.is_admin
    already = " (already an admin)" if was_admin else ""
    user.is_admin = True
    record_cli(
        "user_promoted",
        f"promoted user {user.id} ({user.username}){already}",
        target=("user", user.id),
        changes=changed("is_admin", was_admin, True),
    )
    db.session.commit()
    click.echo(f"{user.username} is {'already' if already else 'now'} an admin.")


@click.command("create-admin")
@click.argument("username")
@click.argument("email")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)
@with_appcontext
def create_admin(username: str, email: str, password_stdin: bool) -> None:
    """Create the admin account USERNAME with address EMAIL."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        account = SignupSchema().load({"username": username, "email": email, "password": password})
    except ValidationError as error:
        problems = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in error.messages.items()
        )
        raise click.ClickException(problems) from None

    user = User(username=account["username"], email=account["email"], is_admin=True)
    user.set_password(account["password"])
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError as error:
        db.session.rollback()
        raise click.ClickException(conflict_message(error)) from None
    record_cli(
        "admin_created", f"created admin {user.id} ({user.username})", target=("user", user.id)
    )
    db.session.commit()
    click.echo(f"Created admin {user.username}.")


# What the app's own role may do to each table, and no more: it owns nothing, so it can neither
# DROP nor ALTER anything, and the audit trail is append-only for it by privilege as well as by
# trigger. A new table must say here what the app may do with it (a test holds them equal).
APP_ROLE_PRIVILEGES = {
    "users": "SELECT, INSERT, UPDATE",
    "notes": "SELECT, INSERT, UPDATE, DELETE",
    "token_families": "SELECT, INSERT, UPDATE, DELETE",
    "audit_logs": "SELECT, INSERT",
    "password_reset_tokens": "SELECT, INSERT, DELETE",
}


@click.command("grant-app-role")
@click.argument("role")
@with_appcontext
def grant_app_role(role: str) -> None:
    """Give the PostgreSQL role ROLE what the app needs, and take away anything else.

    Run it as the tables' owner (the migrations' role), after each `flask db upgrade`.
    """
    if db.engine.dialect.name != "postgresql":
        raise click.ClickException("Roles are PostgreSQL's; SQLite has none.")
    grantee = db.engine.dialect.identifier_preparer.quote(role)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {grantee}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {grantee}",
        f"GRANT USAGE ON SCHEMA public TO {grantee}",
        *(
            f"GRANT {privileges} ON {table} TO {grantee}"
            for table, privileges in APP_ROLE_PRIVILEGES.items()
        ),
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {grantee}",
        # The chain's trigger moves the audit sequence past an id a writer chose (setval).
        f"GRANT UPDATE ON SEQUENCE audit_logs_id_seq TO {grantee}",
    ]
    try:
        for statement in statements:
            db.session.execute(text(statement))
    except ProgrammingError as error:
        db.session.rollback()
        raise click.ClickException(f"Could not grant: {error.orig}".strip()) from None
    db.session.commit()
    click.echo(f"{role} may now use the tables as the app needs, and nothing more.")


@click.command("prune-revocations")
@with_appcontext
def prune_revocations() -> None:
    """Delete the token revocation entries whose tokens have all expired, and expired reset
    links."""
    pruned = prune_expired_families()
    links = prune_expired_reset_links()
    db.session.commit()
    click.echo(f"Pruned {pruned} expired token {'family' if pruned == 1 else 'families'}.")
    click.echo(f"Pruned {links} expired password reset {'link' if links == 1 else 'links'}.")


def init_app(app: Flask) -> None:
    app.cli.add_command(promote_admin)
    app.cli.add_command(create_admin)
    app.cli.add_command(prune_revocations)
    app.cli.add_command(grant_app_role)
    app.cli.add_command(audit_cli)
