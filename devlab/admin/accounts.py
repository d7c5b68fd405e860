"""Changes to users' roles and accounts, and finding users: the rules that the admin routes and
the CLI (`flask demote-admin`, `flask users list`, ...) share, so that the two cannot differ.

A change is made in three steps: the caller takes the admins' lock (devlab/auth/access.py)
and loads the user, `hold_for_change` refuses what would leave no active admin, and
`make_change` changes the row and records it, with `audit` in a request or `record_cli` in a
command. The caller commits (a request's hook, or the command).
"""

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select

from devlab.audit.trail import changed
from devlab.auth.access import is_the_last_active_admin
from devlab.auth.accounts import ERASED
from devlab.extensions import db
from devlab.models import AccountErased, User

LAST_ACTIVE_ADMIN = "This is the last active admin; make another admin first."
LIKE_ESCAPE = "\\"


class LastActiveAdmin(Exception):
    """The change would leave no active admin."""


@dataclass(frozen=True)
class AccountChange:
    action: str  # the audit action
    verb: str  # as the audit detail says it: "promoted user 5"
    field: str  # the column it sets
    value: bool  # what it sets the column to
    state: str  # what the user is afterwards: "already an admin" on a repeat
    takes_admin_role: bool = False  # refused for the last active admin
    revokes_tokens: bool = False


PROMOTE = AccountChange("user_promoted", "promoted", "is_admin", True, "an admin")
DEMOTE = AccountChange(
    "user_demoted", "demoted", "is_admin", False, "not an admin", takes_admin_role=True
)
DEACTIVATE = AccountChange(
    "user_deactivated",
    "deactivated",
    "is_active",
    False,
    "inactive",
    takes_admin_role=True,
    revokes_tokens=True,
)
ACTIVATE = AccountChange("user_activated", "activated", "is_active", True, "active")


def hold_for_change(user: User, active_admin_ids: list[int], *, takes_admin_role: bool) -> User:
    """`user`, as it is now that the caller holds the admins' lock (`active_admin_ids`).

    A change that `takes_admin_role` from the last active admin raises LastActiveAdmin; any
    change to an erased account raises AccountErased.
    """
    if takes_admin_role and is_the_last_active_admin(user, active_admin_ids):
        raise LastActiveAdmin(LAST_ACTIVE_ADMIN)
    db.session.refresh(user)  # a change committed while the caller waited for the lock
    if user.is_erased:
        raise AccountErased(ERASED)
    return user


def make_change(change: AccountChange, user: User, record: Callable) -> bool:
    """Make `change` to `user` (held by `hold_for_change`) and `record` it in the audit trail,
    naming the user by id only. Return whether the user already was so: a repeat changes
    nothing, and its row says "already"."""
    old = getattr(user, change.field)
    setattr(user, change.field, change.value)
    if change.revokes_tokens:
        user.revoke_tokens()
        user.end_reset_links()  # a link mailed before must not work once it is active again
    already = old == change.value
    record(
        change.action,
        f"{change.verb} user {user.id}" + (f" (already {change.state})" if already else ""),
        target=("user", user.id),
        changes=changed(change.field, old, change.value),
    )
    return already


def prefix_pattern(prefix: str) -> str:
    """A LIKE pattern matching what begins with `prefix`, whose %, _ and \\ match themselves."""
    for special in (LIKE_ESCAPE, "%", "_"):
        prefix = prefix.replace(special, LIKE_ESCAPE + special)
    return prefix + "%"


def users_matching(
    q: str | None = None, is_admin: bool | None = None, is_active: bool | None = None
) -> Select:
    """The users, oldest account first, that every filter given lets through.

    `q` is a prefix of the username or the email in any case. Both sides are lowered by the
    database, as the indexes ix_users_username_prefix and ix_users_email_prefix (migration
    0006) hold them, so that PostgreSQL finds the rows in those indexes.
    """
    statement = select(User).order_by(User.id)
    if q is not None:
        pattern = func.lower(prefix_pattern(q))
        statement = statement.where(
            or_(
                func.lower(User.username).like(pattern, escape=LIKE_ESCAPE),
                func.lower(User.email).like(pattern, escape=LIKE_ESCAPE),
            )
        )
    if is_admin is not None:
        statement = statement.where(User.is_admin.is_(is_admin))
    if is_active is not None:
        statement = statement.where(User.is_active.is_(is_active))
    return statement
