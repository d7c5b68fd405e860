"""Who is calling, and what they may do: the one place access is decided.

Tokens carry an `is_admin` claim for clients to read, but every decision uses the user's row
as it is in the database now, so a promotion applies to tokens already issued and a token
whose user is gone is refused.
"""

import re
from functools import wraps
from http import HTTPStatus

from flask import Flask, request
from flask_jwt_extended import get_current_user, jwt_required
from flask_jwt_extended.config import config as jwt_config
from flask_jwt_extended.exceptions import JWTDecodeError
from flask_smorest import Blueprint, abort
from jwt import MissingRequiredClaimError
from sqlalchemy import select

from devlab import passwords
from devlab.audit.trail import audit
from devlab.auth.tokens import family_of
from devlab.errors import error_response
from devlab.extensions import db, jwt
from devlab.models import User

# An access token: pasted, or fetched by Swagger UI's Authorize with a username and password.
ACCESS_TOKEN_SECURITY = [{"bearerAuth": []}, {"passwordLogin": []}]
# A refresh token can only be pasted: the password flow hands Swagger UI an access token.
REFRESH_TOKEN_SECURITY = [{"bearerAuth": []}]
ADMIN_REQUIRED = "This requires the admin role."
INVALID_TOKEN = "Invalid token."  # noqa: S105 (a message, not a secret)

# Every token DevLab issues carries all of these. PyJWT checks `exp`, `iat` and `nbf` only when
# present, and Flask-JWT-Extended fills in a missing `type` ("access") and `jti`, so a token
# signed with the key but without them would never expire or would pass as an access token.
REQUIRED_CLAIMS = ("exp", "iat", "nbf", "jti", "type", "sub", "fam")
TEXT_CLAIMS = ("jti", "type", "sub", "fam")
TOKEN_TYPES = ("access", "refresh")
# RFC 7235: the scheme is case-insensitive, and one or more spaces follow it.
BEARER_CREDENTIALS = re.compile(r"bearer +([^\s,]+)", re.IGNORECASE)


def _documented(view, *statuses: int, security=ACCESS_TOKEN_SECURITY):
    # Every token is checked against the database, so every protected route may answer 503.
    responses = {str(status): HTTPStatus(status).name for status in (*statuses, 503)}
    return Blueprint.doc(security=security, responses=responses)(view)


def login_required(view):
    """Require a live access token of an existing, active user."""
    return _documented(jwt_required()(view), 401)


def refresh_token_required(view):
    """Require a live refresh token of an existing, active user."""
    return _documented(jwt_required(refresh=True)(view), 401, security=REFRESH_TOKEN_SECURITY)


def admin_required(view):
    """Require a valid access token of a user who is an admin right now."""

    @wraps(view)
    def admins_only(*args, **kwargs):
        if not get_current_user().is_admin:
            audit("access_denied", "admin role required")
            abort(403, message=ADMIN_REQUIRED)
        return view(*args, **kwargs)

    return _documented(jwt_required()(admins_only), 401, 403)


def locked_active_admin_ids() -> list[int]:
    """Lock the active admins' rows until the transaction ends; return their ids.

    An admin counts once it can act: an admin account made by POST /admin/users has no
    password until its owner chooses one through the mailed link, and until then it keeps no
    one in charge (the mail may never arrive).

    Role and account changes take this lock, over HTTP and from the CLI alike, so they run one
    at a time, each seeing the last one's outcome. Any other row such a change locks, it locks
    after this one.
    """
    return db.session.scalars(
        select(User.id)
        .where(
            User.is_admin.is_(True),
            User.is_active.is_(True),
            User.hashed_password != passwords.UNUSABLE_HASH,
        )
        # FOR NO KEY UPDATE: it serializes the changes that take it, and leaves alone the key
        # share locks that a foreign key check or the audit trail's trigger takes on an actor's
        # row. FOR UPDATE waited for those, while their requests could wait for a row this lock
        # held: an admin's reset link for another admin and a deactivation ran into each other.
        .with_for_update(key_share=True)
    ).all()


def lock_active_admins() -> list[int]:
    """`locked_active_admin_ids`, for an admin's request.

    The caller passed `admin_required` before waiting: if it lost the role meanwhile, it is
    refused now (403).
    """
    active_admin_ids = locked_active_admin_ids()
    if get_current_user().id not in active_admin_ids:
        audit("access_denied", "admin role lost while the request waited")
        abort(403, message=ADMIN_REQUIRED)
    return active_admin_ids


def is_the_last_active_admin(user: User, active_admin_ids: list[int]) -> bool:
    """The rule every change that takes the admin role or an account away obeys: it must
    leave an active admin (`active_admin_ids`, from locked_active_admin_ids)."""
    return active_admin_ids == [user.id]


def accept_any_case_bearer_scheme() -> None:
    """Let `bearer <token>` in any case through: Flask-JWT-Extended compares the scheme with
    "Bearer" exactly, so the header is rewritten to that spelling before it reads it."""
    credentials = request.environ.get("HTTP_AUTHORIZATION")
    if credentials and not credentials.startswith("Bearer "):
        match = BEARER_CREDENTIALS.fullmatch(credentials.strip())
        if match:
            request.environ["HTTP_AUTHORIZATION"] = f"Bearer {match.group(1)}"


def init_app(app: Flask) -> None:
    app.before_request(accept_any_case_bearer_scheme)


@jwt.decode_key_loader
def _key_for_complete_tokens(_jwt_header: dict, unverified_claims: dict) -> str:
    """The signing key, for a token that has every claim DevLab issues; any other is invalid.

    Flask-JWT-Extended hands this loader the claims as sent, before it fills in defaults; the
    signature is verified right after, with the key returned.
    """
    for claim in REQUIRED_CLAIMS:
        if claim not in unverified_claims:
            raise MissingRequiredClaimError(claim)
    if not all(isinstance(unverified_claims[claim], str) for claim in TEXT_CLAIMS):
        raise JWTDecodeError("A claim that must be text is not.")
    if unverified_claims["type"] not in TOKEN_TYPES:
        raise JWTDecodeError("Unknown token type.")
    return jwt_config.decode_key


@jwt.token_in_blocklist_loader
def _is_revoked(_jwt_header: dict, jwt_data: dict) -> bool:
    family = family_of(jwt_data)
    return family is not None and family.is_revoked


@jwt.token_verification_loader
def _belongs_to_a_login(_jwt_header: dict, jwt_data: dict) -> bool:
    """A token whose family never existed, or is another user's, is invalid, not revoked."""
    return family_of(jwt_data) is not None


@jwt.user_lookup_loader
def _load_user(_jwt_header: dict, jwt_data: dict) -> User | None:
    """The token's user, if it still exists and is active; a deactivated user's tokens fail.

    Read with the token's family (`family_of`), which every request has checked by now.
    """
    family = family_of(jwt_data)
    if family is None or not family.user.is_active:
        return None
    return family.user


def _deny(message: str, reason: str):
    audit("access_denied", reason)
    return error_response(401, message, headers={"WWW-Authenticate": "Bearer"})


@jwt.unauthorized_loader
def _missing_token(_reason: str):
    return _deny("Missing bearer token: send 'Authorization: Bearer <token>'.", "missing token")


@jwt.invalid_token_loader
def _invalid_token(_reason: str):
    return _deny(INVALID_TOKEN, "invalid token")


@jwt.token_verification_failed_loader
def _token_of_no_login(_jwt_header: dict, _jwt_data: dict):
    return _deny(INVALID_TOKEN, "token of no login of its user")


@jwt.expired_token_loader
def _expired_token(_jwt_header: dict, _jwt_data: dict):
    return _deny("Token has expired; refresh it or log in again.", "expired token")


@jwt.user_lookup_error_loader
def _unknown_user(_jwt_header: dict, _jwt_data: dict):
    return _deny(INVALID_TOKEN, "token of a user who no longer exists or is deactivated")


@jwt.revoked_token_loader
def _revoked_token(_jwt_header: dict, _jwt_data: dict):
    return _deny("Token has been revoked; log in again.", "revoked token")
