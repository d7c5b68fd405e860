"""Issuing, rotating and revoking tokens, one family per login (see models.TokenFamily)."""

from uuid import uuid4

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, get_jwt
from sqlalchemy import delete, select

from devlab.extensions import db
from devlab.models import TokenFamily, User, utcnow


def start_family(user: User) -> dict:
    """Tokens for a fresh login, in a new family."""
    family = TokenFamily(id=str(uuid4()), user_id=user.id)
    db.session.add(family)
    return hand_on(user, family)


def hand_on(user: User, family: TokenFamily) -> dict:
    """New access and refresh tokens in `family`; only the new refresh token works after this.

    The result is the body TokenSchema describes.
    """
    config = current_app.config
    access_lifetime = config["JWT_ACCESS_TOKEN_EXPIRES"]
    refresh_lifetime = config["JWT_REFRESH_TOKEN_EXPIRES"]
    family.refresh_jti = str(uuid4())
    family.expires_at = utcnow() + max(access_lifetime, refresh_lifetime)
    identity = str(user.id)
    access_token = create_access_token(
        identity=identity, additional_claims={"is_admin": user.is_admin, "fam": family.id}
    )
    refresh_token = create_refresh_token(
        identity=identity, additional_claims={"fam": family.id, "jti": family.refresh_jti}
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


def family_is_live(jwt_data: dict) -> bool:
    """Whether a decoded token belongs to a family that exists, is its user's and is not revoked."""
    family_id = jwt_data.get("fam")
    if not isinstance(family_id, str):
        return False
    family = db.session.get(TokenFamily, family_id)
    return (
        family is not None and not family.is_revoked and str(family.user_id) == jwt_data.get("sub")
    )


def prune_expired_families() -> int:
    """Delete the families whose every token has expired; return how many."""
    expired = delete(TokenFamily).where(TokenFamily.expires_at < utcnow())
    return db.session.execute(expired).rowcount
