"""Issuing, rotating and revoking tokens, one family per login (see models.TokenFamily)."""

from datetime import timedelta
from uuid import uuid4

from flask import current_app, g
from flask_jwt_extended import create_access_token, create_refresh_token, get_jwt
from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm.attributes import set_committed_value

from devlab.extensions import db
from devlab.models import TokenFamily, User, utcnow

# Built once: the family a token names and its user, in one row (see `family_of`).
FAMILY_WITH_USER = (
    select(TokenFamily, User)
    .join(User, User.id == TokenFamily.user_id)
    .where(TokenFamily.id == bindparam("family_id"))
)
FAMILY_OF_TOKEN = "devlab_family_of_token"  # noqa: S105 (a key of flask.g)


def start_family(user: User) -> dict:
    """Tokens for a fresh login, in a new family."""
    family = TokenFamily(id=str(uuid4()), user_id=user.id, created_at=utcnow())
    db.session.add(family)
    return hand_on(user, family)


def hand_on(user: User, family: TokenFamily) -> dict:
    """New access and refresh tokens in `family`; only the new refresh token works after this.

    No token lives past the login's JWT_SESSION_MAX_DAYS, so refreshing cannot keep a session
    alive forever. The result is the body TokenSchema describes.
    """
    config = current_app.config
    now = utcnow()
    left_of_session = family.created_at + config["JWT_SESSION_MAX"] - now
    access_lifetime = min(config["JWT_ACCESS_TOKEN_EXPIRES"], left_of_session)
    refresh_lifetime = min(config["JWT_REFRESH_TOKEN_EXPIRES"], left_of_session)
    if family.refresh_jti is not None:
        family.previous_refresh_jti, family.rotated_at = family.refresh_jti, now
    family.refresh_jti = str(uuid4())
    family.expires_at = now + max(access_lifetime, refresh_lifetime)
    identity = str(user.id)
    access_token = create_access_token(
        identity=identity,
        additional_claims={"is_admin": user.is_admin, "fam": family.id},
        expires_delta=access_lifetime,
    )
    refresh_token = create_refresh_token(
        identity=identity,
        additional_claims={"fam": family.id, "jti": family.refresh_jti},
        expires_delta=refresh_lifetime,
    )
    return {
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": int(access_lifetime.total_seconds()),
        "refresh_token": refresh_token,
        "refresh_expires_in": int(refresh_lifetime.total_seconds()),
    }


def current_family() -> TokenFamily:
    """The family of the token this request presented (already checked to be live)."""
    return db.session.get(TokenFamily, get_jwt()["fam"])


def locked_current_family() -> TokenFamily | None:
    """The current family, locked until the request commits, so that two refreshes with one
    token cannot both succeed; None if `flask prune-revocations` deleted it meanwhile."""
    return db.session.scalars(
        select(TokenFamily)
        .where(TokenFamily.id == get_jwt()["fam"])
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def presented_refresh_token_is_current(family: TokenFamily) -> bool:
    """Whether this request's refresh token is the one `family` hands on next; an older one
    was already used, so it has been stolen or replayed."""
    return get_jwt()["jti"] == family.refresh_jti


def presented_refresh_token_was_just_used(family: TokenFamily) -> bool:
    """Whether this request's refresh token is the one `family` handed on last, within
    JWT_REFRESH_REUSE_GRACE_SECONDS: a client that retried, or refreshed twice at once."""
    if family.rotated_at is None or get_jwt()["jti"] != family.previous_refresh_jti:
        return False
    grace = timedelta(seconds=current_app.config["JWT_REFRESH_REUSE_GRACE_SECONDS"])
    return utcnow() - family.rotated_at <= grace


def family_of(jwt_data: dict) -> TokenFamily | None:
    """The family a decoded token names, if it exists and is the token's user's (revoked or not).

    One query reads the family and its user together, once per request: the revocation check,
    the token's verification and the user lookup all ask, and the result is kept on `g`
    (SQLAlchemy's identity map holds unchanged rows only weakly, so it would read them again).
    """
    family_id = jwt_data["fam"]
    known = g.get(FAMILY_OF_TOKEN)
    if known is not None and known[0] == family_id:
        return known[1]
    found = db.session.execute(FAMILY_WITH_USER, {"family_id": family_id}).one_or_none()
    family = None
    if found is not None:
        family, user = found
        set_committed_value(family, "user", user)  # held by the family, read by no query
    if family is not None and str(family.user_id) != jwt_data["sub"]:
        family = None
    g.setdefault(FAMILY_OF_TOKEN, (family_id, family))
    return family


def prune_expired_families() -> int:
    """Delete the families whose every token has expired; return how many."""
    expired = delete(TokenFamily).where(TokenFamily.expires_at < utcnow())
    return db.session.execute(expired).rowcount
