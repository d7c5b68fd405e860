"""Changes to an account that more than one route makes: confirming the caller's current
password, changing a profile (PATCH /me, PATCH /admin/users/<id>), and erasing an account.

The audit rows name the account by id only: the trail is append-only and outlives an erasure,
so it must hold no username or email (a changed field is named, never its values).
"""

from flask_jwt_extended import current_user
from flask_smorest import abort

from devlab import passwords
from devlab.audit.trail import audit
from devlab.auth.access import is_the_last_active_admin, locked_active_admin_ids
from devlab.auth.limits import PASSWORD_FAILURES
from devlab.extensions import db
from devlab.models import User
from devlab.passwords import HashingBusy

WRONG_CURRENT_PASSWORD = "The current password is incorrect."  # noqa: S105 (a message)
NOTHING_TO_CHANGE = "Give an email, a username, or both."
ERASED = "This account was erased; it has nothing left to change."
LAST_ADMIN = "You are the last active admin; make another admin first."


def confirm_current_password(password: str, *, refused: str, lock_admins: bool = False) -> None:
    """Go on only if `password` is the caller's; else audit `refused` as `access_denied` and
    answer 401, changing nothing.

    Each wrong password spends one of the account's RATELIMIT_PASSWORD_FAILURES. Verifying
    takes a while, and a password change may commit meanwhile: after it, the caller's row is
    read again under a lock held until the request commits, and must still hold the hash that
    was verified. `lock_admins` takes the admins' lock before that row's, in the order role
    changes take them both, for a change that must see who the admins are.
    """
    user = current_user
    attempt = PASSWORD_FAILURES.reserve(str(user.id), counted=f"user {user.id}")
    verified_hash = user.hashed_password
    with attempt.given_back_on(HashingBusy):
        confirmed = passwords.verify_password(verified_hash, password)
    if confirmed:
        if lock_admins:
            locked_active_admin_ids()
        confirmed = user.still_holds(verified_hash)
    if not confirmed:
        audit("access_denied", refused)
        abort(401, message=WRONG_CURRENT_PASSWORD)
    attempt.give_back()
    user.upgrade_hash(password)


def change_profile(user: User, fields: dict) -> User:
    """Give `user` the email and username in `fields` (loaded by ProfileChangeSchema).

    A value equal to the current one changes nothing; the row audits which fields changed
    (`{"email": "changed"}`), never their values. A new email ends the reset links mailed to
    the old one. Another account's name or address, in any
    case, is refused by the database's unique indexes: 409 (errors.py says which).
    The row must be locked already, so that a concurrent erasure is seen.
    """
    if not fields:
        abort(400, message=NOTHING_TO_CHANGE)
    if user.is_erased:
        abort(409, message=ERASED)
    changes = {}
    for field, value in fields.items():
        if getattr(user, field) != value:
            setattr(user, field, value)
            changes[field] = "changed"
    if "email" in changes:
        user.end_reset_links()  # a link mailed to the old address no longer works
    db.session.flush()  # a clash raises here
    audit("profile_changed", f"user {user.id}", target=("user", user.id), changes=changes)
    return user


def erase_own_account(password: str) -> None:
    """Erase the caller's account (User.erase), once `password` confirms it is theirs.

    The last active admin cannot go: the admins' lock makes two admins erasing themselves at
    once see each other's outcome.
    """
    confirm_current_password(
        password, refused="wrong current password on erasure", lock_admins=True
    )
    user = current_user
    # The lock is this request's already; asking again only reads the ids.
    if user.is_admin and is_the_last_active_admin(user, locked_active_admin_ids()):
        abort(409, message=LAST_ADMIN)
    user.erase()
    audit("account_erased", f"user {user.id}", target=("user", user.id))
