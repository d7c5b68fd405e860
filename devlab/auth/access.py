"""Who is calling, and what they may do: the one place access is decided.

Tokens carry an `is_admin` claim for clients to read, but every decision uses the user's row
as it is in the database now, so a promotion applies to tokens already issued and a token
whose user is gone is refused.
"""

from functools import wraps
from http import HTTPStatus

from flask_jwt_extended import get_current_user, jwt_required
from flask_smorest import Blueprint, abort

from devlab.audit.trail import audit
from devlab.auth.tokens import family_is_live
from devlab.errors import error_response
from devlab.extensions import db, jwt
from devlab.models import User

BEARER_SECURITY = [{"bearerAuth": []}, {"passwordLogin": []}]


def _documented(view, *statuses: int):
    # Every token is checked against the database, so every protected route may answer 503.
    responses = {str(status): HTTPStatus(status).name for status in (*statuses, 503)}
    return Blueprint.doc(security=BEARER_SECURITY, responses=responses)(view)


def login_required(view):
    """Require a live access token of an existing, active user."""
    return _documented(jwt_required()(view), 401)


def refresh_token_required(view):
    """Require a live refresh token of an existing, active user."""
    return _documented(jwt_required(refresh=True)(view), 401)


def admin_required(view):
    """Require a valid access token of a user who is an admin right now."""

    @wraps(view)
    def admins_only(*args, **kwargs):
        if not get_current_user().is_admin:
            audit("access_denied", "admin role required")
            abort(403, message="This requires the admin role.")
        return view(*args, **kwargs)

    return _documented(jwt_required()(admins_only), 401, 403)


@jwt.token_in_blocklist_loader
def _is_revoked(_jwt_header: dict, jwt_data: dict) -> bool:
    return not family_is_live(jwt_data)


@jwt.user_lookup_loader
def _load_user(_jwt_header: dict, jwt_data: dict) -> User | None:
    """The token's user, if it still exists and is active; a deactivated user's tokens fail."""
    try:
        user_id = int(jwt_data["sub"])
    except (KeyError, TypeError, ValueError):
        return None
    user = db.session.get(User, user_id)
    return user if user is not None and user.is_active else None


def _deny(message: str, reason: str):
    audit("access_denied", reason)
    return error_response(401, message, headers={"WWW-Authenticate": "Bearer"})


@jwt.unauthorized_loader
def _missing_token(_reason: str):
    return _deny("Missing bearer token: send 'Authorization: Bearer <token>'.", "missing token")


@jwt.invalid_token_loader
def _invalid_token(_reason: str):
    return _deny("Invalid token.", "invalid token")


@jwt.expired_token_loader
def _expired_token(_jwt_header: dict, _jwt_data: dict):
    return _deny("Token has expired; refresh it or log in again.", "expired token")


@jwt.user_lookup_error_loader
def _unknown_user(_jwt_header: dict, _jwt_data: dict):
    return _deny("Invalid token.", "token of a user who no longer exists or is deactivated")


@jwt.revoked_token_loader
def _revoked_token(_jwt_header: dict, _jwt_data: dict):
    return _deny("Token has been revoked; log in again.", "revoked token")


@jwt.needs_fresh_token_loader
def _stale_token(_jwt_header: dict, _jwt_data: dict):
    return _deny("A fresh token is required.", "stale token")


@jwt.token_verification_failed_loader
def _failed_claims(_jwt_header: dict, _jwt_data: dict):
    return _deny("Invalid token.", "token claims rejected")
