from flask.views import MethodView
from flask_smorest import abort

from devlab import passwords
from devlab.audit.trail import audit, pseudonym
from devlab.blueprint import UNREADABLE_BODY, Blueprint
from devlab.errors import DATABASE_UNAVAILABLE, HASHING_BUSY
from devlab.models import User
from devlab.password.limits import FORGOT_PER_EMAIL, limit_forgot, limit_reset
from devlab.password.reset import (
    UnusableLink,
    issue_reset_link,
    redeem_reset_link,
    reset_links_enabled,
)
from devlab.password.schemas import AcceptedSchema, ForgottenPasswordSchema, PasswordResetSchema

blp = Blueprint(
    "password", __name__, url_prefix="/password", description="A forgotten password, by email."
)

LINK_ON_ITS_WAY = (
    "If an active account has this email address, a link to reset its password is on its way."
)
UNUSABLE_LINK = (
    "This reset link is not valid: it is wrong, used, replaced by a newer one, or expired."
)
HASHING_UNAVAILABLE = f"{DATABASE_UNAVAILABLE} Or, with Retry-After: {HASHING_BUSY}"


def requested_detail(email: str, user: User | None) -> str:
    """What the trail says of a reset asked for: the account by id, or the address's pseudonym."""
    if user is None:
        return f"no account has this address ({pseudonym(email)}): nothing sent"
    if not user.is_active:
        return f"user {user.id} is deactivated: nothing sent"
    return f"reset link sent to user {user.id}"


@blp.route("/forgot")
class ForgottenPassword(MethodView):
    @limit_forgot
    @reset_links_enabled
    @blp.arguments(ForgottenPasswordSchema)
    @blp.response(202, AcceptedSchema)
    @blp.alt_error(503, DATABASE_UNAVAILABLE)
    def post(self, asked):
        """Ask for a link to reset a forgotten password, sent to the account's email address.

        The answer is the same 202 whether or not an account has the address, and whether or
        not it is active, and takes as long: the mail goes out after it. The link works once,
        for PASSWORD_RESET_MINUTES; a newer link or any change of password ends it.
        """
        email = asked["email"].lower()
        FORGOT_PER_EMAIL.reserve(pseudonym(email), counted=f"address {pseudonym(email)}")
        user = User.by_email(email)
        issue_reset_link(user)
        audit(
            "password_reset_requested",
            requested_detail(email, user),
            target=None if user is None else ("user", user.id),
        )
        return {"message": LINK_ON_ITS_WAY}


@blp.route("/reset")
class PasswordReset(MethodView):
    @limit_reset
    @reset_links_enabled
    @blp.arguments(PasswordResetSchema)
    @blp.response(204)
    @blp.alt_error(400, f"{UNUSABLE_LINK} Or: {UNREADABLE_BODY}")
    @blp.alt_error(503, HASHING_UNAVAILABLE)
    def post(self, reset):
        """Choose a new password with the token of a reset link.

        The token works once. Every token the account holds stops working: log in anew with
        the new password. A wrong, used, replaced or expired token answers 400, all alike.
        """
        # Hashed before the link is used up: the link's row stays locked for no longer than a
        # statement, and a wrong token costs as long as a right one.
        new_hash = passwords.hash_password(reset["new_password"])
        try:
            user = redeem_reset_link(reset["token"])
        except UnusableLink as refused:
            target = None if refused.user_id is None else ("user", refused.user_id)
            audit("password_reset_failed", refused.reason, target=target)
            abort(400, message=UNUSABLE_LINK)
        user.replace_password_hash(new_hash)
        ended = user.revoke_tokens()
        audit(
            "password_reset",
            f"user {user.id} reset the password with a link; token families revoked: {ended}",
            actor=user,
            target=("user", user.id),
            changes={"password": "changed"},
        )
