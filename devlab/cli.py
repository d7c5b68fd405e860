"""Commands: the first admin and user management without hand-written SQL (the admin routes'
rules, from devlab/admin/accounts.py), housekeeping of revocations, and the audit trail's
(devlab/audit/commands.py)."""

import sys
from datetime import UTC

import click
from flask import Flask
from flask.cli import with_appcontext
from marshmallow import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, ProgrammingError

from devlab.admin.accounts import (
    ACTIVATE,
    DEACTIVATE,
    DEMOTE,
    PROMOTE,
    AccountChange,
    LastActiveAdmin,
    hold_for_change,
    make_change,
    users_matching,
)
from devlab.audit.commands import audit_cli
from devlab.audit.trail import record_cli
from devlab.auth.access import locked_active_admin_ids
from devlab.auth.reset_links import prune_expired_reset_links
from devlab.auth.schemas import SignupSchema
from devlab.auth.tokens import prune_expired_families
from devlab.errors import conflict_message
from devlab.extensions import db
from devlab.models import AccountErased, User


def user_named(username: str) -> User:
    """The user of that name in any case; an unknown name stops the command (exit 1)."""
    user = User.by_username(username)
    if user is None:
        raise click.ClickException(f"No user named {username!r}.")
    return user


def user_to_change(username: str, change: AccountChange) -> User:
    """The user a role or account change applies to, read under the admins' lock that the
    admin routes take too; the last active admin's role is kept (exit 1)."""
    user = user_named(username)
    try:
        return hold_for_change(
            user, locked_active_admin_ids(), takes_admin_role=change.takes_admin_role
        )
    except LastActiveAdmin:
        raise click.ClickException(
            f"{user.username} is the last active admin; make another admin first."
        ) from None
    except AccountErased:
        raise click.ClickException(
            f"{user.username}'s account was erased; nothing to change."
        ) from None


def account_change_command(name: str, change: AccountChange, done: str, summary: str):
    """A command making `change` to USERNAME, as the admin route of the same change does.
    `done` completes "alice is ..." after a change; a repeat says "alice is already ..."."""

    @click.command(name, help=summary)
    @click.argument("username")
    @with_appcontext
    def command(username: str) -> None:
        user = user_to_change(username, change)
        already = make_change(change, user, record=record_cli)
        db.session.commit()
        click.echo(f"{user.username} is {f'already {change.state}' if already else done}.")

    return command


promote_admin = account_change_command(
    "promote-admin", PROMOTE, "now an admin", "Give the existing user USERNAME the admin role."
)
demote_admin = account_change_command(
    "demote-admin",
    DEMOTE,
    "no longer an admin",
    "Take the admin role away from USERNAME; refused for the last active admin.",
)
deactivate = account_change_command(
    "deactivate",
    DEACTIVATE,
    "now inactive: every token it held is revoked, and it cannot log in",
    "Lock USERNAME out and revoke every token it holds; refused for the last active admin.",
)
activate = account_change_command(
    "activate",
    ACTIVATE,
    "active again: it may log in (its old tokens stay revoked)",
    "Let the deactivated user USERNAME log in again.",
)


PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)


def read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def refused_input(error: ValidationError) -> click.ClickException:
    """What the API would answer with a 422, as a command's error (exit 1)."""
    problems = "; ".join(
        f"{field}: {' '.join(messages)}" for field, messages in error.messages.items()
    )
    return click.ClickException(problems)


@click.command("create-admin")
@click.argument("username")
@click.argument("email")
@PASSWORD_STDIN
@with_appcontext
def create_admin(username: str, email: str, password_stdin: bool) -> None:
    """Create the admin account USERNAME with address EMAIL."""
    password = read_password(password_stdin)
    try:
        account = SignupSchema().load({"username": username, "email": email, "password": password})
    except ValidationError as error:
        raise refused_input(error) from None

    user = User(username=account["username"], email=account["email"], is_admin=True)
    user.set_password(account["password"])
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError as error:
        db.session.rollback()
        raise click.ClickException(conflict_message(error)) from None
    record_cli("admin_created", f"created admin {user.id}", target=("user", user.id))
    db.session.commit()
    click.echo(f"Created admin {user.username}.")


@click.command("set-password")
@click.argument("username")
@PASSWORD_STDIN
@with_appcontext
def set_password(username: str, password_stdin: bool) -> None:
    """Give USERNAME a new password (the rules of signup), for operators without a mail server.

    As after a password change, every token the user holds is revoked, and so is every reset
    link sent to them.
    """
    user = user_named(username)
    password = read_password(password_stdin)
    try:
        password = SignupSchema(only=["password"]).load({"password": password})["password"]
    except ValidationError as error:
        raise refused_input(error) from None
    db.session.refresh(user, with_for_update=True)  # an erasure committed meanwhile is seen
    try:
        user.set_password(password)
    except AccountErased:
        raise click.ClickException(
            f"{user.username}'s account was erased; it takes no password."
        ) from None
    ended = user.revoke_tokens()
    record_cli(
        "password_changed",
        f"set the password of user {user.id}; token families revoked: {ended}",
        target=("user", user.id),
        changes={"password": "changed"},
    )
    db.session.commit()
    click.echo(f"Set the password of {user.username}; logins ended: {ended}.")


@click.group("users")
def users_cli() -> None:
    """Look users up."""


@users_cli.command("list")
@click.option("--admins", is_flag=True, help="Only admins.")
@click.option("--inactive", is_flag=True, help="Only deactivated accounts.")
@with_appcontext
def list_users(admins: bool, inactive: bool) -> None:
    """List users, oldest account first: id, username, admin, active, created, email."""
    filters = {"is_admin": True if admins else None, "is_active": False if inactive else None}
    shown = 0
    click.echo(f"{'id':>10}  {'username':<32}  admin  active  {'created (UTC)':<16}  email")
    rows = db.session.scalars(users_matching(**filters).execution_options(yield_per=1000))
    for user in rows:
        created = user.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"{user.id:>10}  {user.username:<32}  {yes_no(user.is_admin):<5}  "
            f"{yes_no(user.is_active):<6}  {created:<16}  {user.email}"
        )
        shown += 1
    recorded = {name: value for name, value in filters.items() if value is not None}
    record_cli("users_listed", f"listed {shown} users", changes={"filters": recorded})
    db.session.commit()
    click.echo(f"{shown} {'user' if shown == 1 else 'users'}.")


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# What the app's own role may do to each table, and no more: it owns nothing, so it can neither
# DROP nor ALTER anything, and the audit trail is append-only for it by privilege as well as by
# trigger. A new table must say here what the app may do with it (a test holds them equal).
APP_ROLE_PRIVILEGES = {
    "users": "SELECT, INSERT, UPDATE",
    "notes": "SELECT, INSERT, UPDATE, DELETE",
    "token_families": "SELECT, INSERT, UPDATE, DELETE",
    "audit_logs": "SELECT, INSERT",
    # A password change and an erasure delete the account's reset links.
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
    app.cli.add_command(demote_admin)
    app.cli.add_command(deactivate)
    app.cli.add_command(activate)
    app.cli.add_command(set_password)
    app.cli.add_command(users_cli)
    app.cli.add_command(create_admin)
    app.cli.add_command(prune_revocations)
    app.cli.add_command(grant_app_role)
    app.cli.add_command(audit_cli)
