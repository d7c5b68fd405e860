"""Reset links: issuing one (a forgotten password, a new account, an admin's request) and
redeeming one. Shared by the auth routes (/password/forgot, /password/reset) and the admin routes;
imports no routes.

A link holds a token of 32 random bytes (URL-safe base64); only its SHA-256 is stored
(models.PasswordResetToken), so the table alone opens no account. A link works once, for
PASSWORD_RESET_MINUTES, and only while it is the account's newest: issuing one deletes the
account's others, and so does any change of password (User.replace_password_hash).
"""

import hashlib
import secrets
from datetime import timedelta
from functools import wraps

from flask import current_app
from flask_smorest import Blueprint, abort
from sqlalchemy import Integer, String, bindparam, delete, func, insert, literal, select

from devlab.extensions import db
from devlab.mail import Mail, send_after_commit
from devlab.models import PasswordResetToken, User, utcnow

TOKEN_BYTES = 32
# token_urlsafe(32) writes 43 characters; anything up to this is looked up (and not found).
TOKEN_MAX = 128
RESETS_OFF = "Password reset by email is turned off on this server (PASSWORD_RESET_ENABLED=0)."
RESETS_OFF_RESPONSE = {
    "description": RESETS_OFF,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


class UnusableLink(Exception):
    """The token is unknown, used, superseded or expired, or its account is deactivated.
    `reason` is for the audit trail only: the client is told one thing for all of them."""

    def __init__(self, reason: str, user_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.user_id = reason, user_id


def reset_links_enabled(view):
    """Answer 403 while PASSWORD_RESET_ENABLED is off, and document it."""

    @wraps(view)
    def enabled_only(*args, **kwargs):
        if not current_app.config["PASSWORD_RESET_ENABLED"]:
            abort(403, message=RESETS_OFF)
        return view(*args, **kwargs)

    return Blueprint.doc(responses={"403": RESETS_OFF_RESPONSE})(enabled_only)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_reset_link(account: User | str, *, new_account: bool = False) -> User | None:
    """Give an account a new reset link, ending its older ones, and mail it after the commit;
    only an active account gets one. `account` is a user, or the address typed into
    POST /password/forgot (any case). Return the account, as it is now, or None.

    The account's row is locked first, as every password or address change locks it before
    it ends the links: a change that commits meanwhile is seen (a link is never mailed to an
    address just replaced: the row no longer matches it), two requests at once leave one
    link, and both kinds of request take their locks in one order. With no account (or one
    that gets no link) the same three statements run and change no row: POST /password/forgot
    must take as long for an address nobody has as for an account's.
    """
    if isinstance(account, User):
        which = User.id == bindparam("user_id", account.id, Integer)
    else:  # addresses are ASCII (as usernames, see User.by_username): other text, a bound
        # NULL, matches no row
        email = account.lower() if account.isascii() else None
        which = func.lower(User.email) == bindparam("email", email, String)
    user = db.session.scalar(
        select(User)
        .where(which)
        .with_for_update(key_share=True)  # FOR NO KEY UPDATE: see locked_active_admin_ids
        .execution_options(populate_existing=True)
    )
    gets_link = user is not None and user.is_active
    user_id = bindparam("user_id", user.id if gets_link else None, type_=Integer)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    expires_at = now + timedelta(minutes=current_app.config["PASSWORD_RESET_MINUTES"])
    columns = PasswordResetToken.__table__.c
    db.session.execute(delete(PasswordResetToken).where(PasswordResetToken.user_id == user_id))
    db.session.execute(
        insert(PasswordResetToken).from_select(
            ["user_id", "token_hash", "created_at", "expires_at"],
            select(
                User.id,
                literal(token_hash(token), columns.token_hash.type),
                literal(now, columns.created_at.type),
                literal(expires_at, columns.expires_at.type),
            ).where(User.id == user_id),
        )
    )
    if gets_link:
        send_after_commit(reset_mail(user, token, new_account=new_account))
    return user


def reset_mail(user: User, token: str, *, new_account: bool) -> Mail:
    config = current_app.config
    link = f"{config['PUBLIC_BASE_URL']}/reset-password#token={token}"
    minutes = config["PASSWORD_RESET_MINUTES"]
    if new_account:
        subject = "Your DevLab account"
        opening = (
            "An administrator has made a DevLab account for you, with the username "
            f'"{user.username}".\n\nTo choose its password, open this link within {minutes} '
            "minutes:"
        )
        closing = (
            "It works once. When it has expired, ask for a new one with this address where "
            "you log in (Forgot password), or ask an administrator."
        )
    else:
        subject = "Reset your DevLab password"
        opening = (
            "Someone, hopefully you, asked to reset the password of your DevLab account "
            f'"{user.username}".\n\nTo choose a new password, open this link within {minutes} '
            "minutes:"
        )
        closing = (
            "It works once. If you did not ask for it, ignore this mail: your password stays "
            "as it is."
        )
    return Mail(
        to=user.email,
        subject=subject,
        body=f"{opening}\n\n{link}\n\n{closing}\n",
        about=f"the password reset link of user {user.id}",
    )


def redeem_reset_link(token: str) -> User:
    """Use up the link of `token` and return its account, locked; or raise UnusableLink.

    The account's row is locked before the link's (the order of every password or address
    change, which ends the links after locking the account), and the link is then deleted
    and read in one statement (DELETE ... RETURNING): of two requests with the same token at
    once, the second waits for the first and then finds nothing, so exactly one succeeds.
    """
    hashed = token_hash(token)
    owner_id = db.session.scalar(
        select(PasswordResetToken.user_id).where(PasswordResetToken.token_hash == hashed)
    )
    if owner_id is None:
        raise UnusableLink("unknown, used or superseded reset link")
    user = db.session.get(User, owner_id, with_for_update=True, populate_existing=True)
    used = db.session.execute(
        delete(PasswordResetToken)
        .where(PasswordResetToken.token_hash == hashed)
        .returning(PasswordResetToken.expires_at)
    ).one_or_none()
    if used is None:  # used, or ended by a change, while this request waited for the lock
        raise UnusableLink("used or superseded reset link", owner_id)
    if used.expires_at <= utcnow():
        raise UnusableLink(f"expired reset link of user {owner_id}", owner_id)
    if not user.is_active:
        raise UnusableLink(f"reset link of deactivated user {owner_id}", owner_id)
    return user


def prune_expired_reset_links() -> int:
    """Delete the reset links past their expiry; return how many."""
    expired = delete(PasswordResetToken).where(PasswordResetToken.expires_at < utcnow())
    return db.session.execute(expired).rowcount
