from flask.views import MethodView
from flask_jwt_extended import current_user, get_jwt, get_jwt_header
from flask_jwt_extended.exceptions import RevokedTokenError
from flask_smorest import abort

from devlab import passwords
from devlab.audit.trail import (
    attempted_username,
    audit,
    keep_changes_despite_failure,
    pseudonym,
)
from devlab.auth.access import login_required, refresh_token_required
from devlab.auth.accounts import (
    LAST_ADMIN,
    NOTHING_TO_CHANGE,
    change_profile,
    confirm_current_password,
    erase_own_account,
)
from devlab.auth.limits import (
    FORGOT_PER_EMAIL,
    LOGIN_FAILURES,
    limit_forgot,
    limit_login,
    limit_password_checks,
    limit_refresh,
    limit_reset,
    limit_signup,
)
from devlab.auth.reset_links import (
    UnusableLink,
    issue_reset_link,
    redeem_reset_link,
    reset_links_enabled,
)
from devlab.auth.schemas import (
    AcceptedSchema,
    AccountErasureSchema,
    ForgottenPasswordSchema,
    LoginFailedSchema,
    LoginSchema,
    OwnProfileChangeSchema,
    PasswordChangeSchema,
    PasswordResetSchema,
    SignupSchema,
    TokenSchema,
    UserSchema,
)
from devlab.auth.tokens import (
    current_family,
    hand_on,
    locked_current_family,
    presented_refresh_token_is_current,
    presented_refresh_token_was_just_used,
    start_family,
)
from devlab.blueprint import UNREADABLE_BODY, Blueprint
from devlab.errors import DATABASE_UNAVAILABLE, HASHING_BUSY
from devlab.extensions import db
from devlab.models import User
from devlab.passwords import HashingBusy, refuse_if_hashing_is_full, spend_verification_time

blp = Blueprint(
    "auth", __name__, description="Sign up, log in, refresh and revoke tokens, manage your account."
)

LOGIN_FAILED = "Incorrect username or password."
# Routes that hash a password may also answer 503 when too many are being hashed.
UNAVAILABLE = f"{DATABASE_UNAVAILABLE} Or, with Retry-After: {HASHING_BUSY}"
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
REFRESH_JUST_USED = (
    "This refresh token was just used; use the tokens that refresh returned. Nothing was revoked."
)


def failed_login_detail(typed: str, user: User | None) -> str:
    """What the audit trail says of a failed login (see `attempted_username`)."""
    state = " (account deactivated)" if user is not None and not user.is_active else ""
    return f"attempted username: {attempted_username(typed, user)}{state}"


@blp.route("/signup")
class Signup(MethodView):
    @limit_signup
    @blp.arguments(SignupSchema)
    @blp.response(201, UserSchema)
    @blp.alt_error(409, "The username or email is already registered.")
    @blp.alt_error(503, UNAVAILABLE)
    def post(self, account):
        """Create an account."""
        user = User(username=account["username"], email=account["email"])
        user.set_password(account["password"])
        db.session.add(user)
        db.session.flush()  # a duplicate raises here, answered with 409 by errors.py
        audit("signup", f"user {user.id}", actor=user, target=("user", user.id))
        return user


@blp.route("/login")
class Login(MethodView):
    @limit_login
    @blp.arguments(LoginSchema, location="json_or_form")
    @blp.response(200, TokenSchema)
    @blp.alt_response(401, schema=LoginFailedSchema, description=LOGIN_FAILED)
    @blp.alt_error(503, UNAVAILABLE)
    @blp.doc(
        requestBody={"content": {"application/x-www-form-urlencoded": {"schema": LoginSchema}}}
    )
    def post(self, credentials):
        """Log in and get an access token and a refresh token.

        Send JSON, or a form post as in the OAuth2 password flow. A wrong password, an unknown
        username and a deactivated account all get the same answer.
        """
        username, password = credentials["username"], credentials["password"]
        refuse_if_hashing_is_full()  # before the lookup: a flood's surplus logins cost no query
        user = User.by_username(username)
        # Reserved before the password is checked, given back if it is right: only failures
        # count, and a burst cannot check more passwords than the limit allows. Also reserved
        # before the login queues for a hashing slot, so that one over the limit never takes a
        # place in the queue (nor holds a slot through database work); one that then finds no
        # slot was no attempt.
        attempt = LOGIN_FAILURES.reserve(
            pseudonym(username), counted=attempted_username(username, user)
        )
        with attempt.given_back_on(HashingBusy):
            if user is None:
                spend_verification_time(password)
            if user is None or not user.may_log_in(password):
                audit("login_failed", failed_login_detail(username, user), actor=user)
                # RFC 6749's error too, which Swagger UI's Authorize dialog shows.
                abort(
                    401,
                    message=LOGIN_FAILED,
                    headers=BEARER_CHALLENGE,
                    oauth_error="invalid_grant",
                )
        attempt.give_back()
        audit("login_success", f"user {user.id}", actor=user)
        return start_family(user)


@blp.route("/token/refresh")
class TokenRefresh(MethodView):
    @limit_refresh
    @refresh_token_required
    @blp.response(200, TokenSchema)
    def post(self):
        """Trade a refresh token for new access and refresh tokens.

        Send the refresh token as the bearer token. Each refresh token works once. The one
        used last, sent again within JWT_REFRESH_REUSE_GRACE_SECONDS (a retry, or two tabs
        refreshing at once), gets a 401 and changes nothing: keep the tokens its first use
        returned. Any older one, or that one later, revokes every token of the login.
        """
        family = locked_current_family()
        if family is None or family.is_revoked:
            # Revoked (or pruned) after the token was checked: answered as any revoked token.
            raise RevokedTokenError(get_jwt_header(), get_jwt())
        if presented_refresh_token_was_just_used(family):
            audit("access_denied", f"refresh token of token family {family.id} sent again")
            abort(401, message=REFRESH_JUST_USED, headers=BEARER_CHALLENGE)
        if not presented_refresh_token_is_current(family):
            family.revoke()
            keep_changes_despite_failure()
            audit(
                "token_reuse_detected",
                f"token family {family.id} revoked",
                target=("token_family", family.id),
            )
            abort(
                401,
                message="This refresh token was already used; every token of this login is "
                "revoked. Log in again.",
                headers=BEARER_CHALLENGE,
            )
        audit("token_refreshed", f"token family {family.id}", target=("token_family", family.id))
        return hand_on(current_user, family)


@blp.route("/logout")
class Logout(MethodView):
    @login_required
    @blp.response(204)
    def post(self):
        """Revoke this access token and every token of the same login."""
        family = current_family()
        family.revoke()
        audit("logout", f"token family {family.id} revoked", target=("token_family", family.id))


@blp.route("/logout/all")
class LogoutEverywhere(MethodView):
    @login_required
    @blp.response(204)
    def post(self):
        """Revoke every token of every login you have, this one included."""
        ended = current_user.revoke_tokens()
        audit(
            "logout_all",
            f"user {current_user.id}: token families revoked: {ended}",
            target=("user", current_user.id),
        )


@blp.route("/me")
class Me(MethodView):
    @login_required
    @blp.response(200, UserSchema)
    def get(self):
        """Your own account."""
        return current_user

    @limit_password_checks
    @login_required
    @blp.arguments(OwnProfileChangeSchema)
    @blp.response(200, UserSchema)
    @blp.alt_error(400, f"{NOTHING_TO_CHANGE} Or: the body could not be read.")
    @blp.alt_error(409, "The username or email is already another account's (in any case).")
    def patch(self, change):
        """Change your email address, your username, or both.

        The same rules as at signup apply, and `current_password` must be right: a wrong one
        answers 401 and changes nothing (after RATELIMIT_PASSWORD_FAILURES of them, 429).
        A value equal to the current one is no change. Your tokens keep working.
        """
        password = change.pop("current_password")
        confirm_current_password(password, refused="wrong current password on profile change")
        return change_profile(current_user, change)

    @limit_password_checks
    @login_required
    @blp.arguments(AccountErasureSchema)
    @blp.response(204)
    @blp.alt_error(409, LAST_ADMIN)
    def delete(self, erasure):
        """Erase your account, for good.

        Your notes are deleted and every token you hold is revoked. The account's row stays,
        emptied: renamed `deleted-<id>`, with no email or password of yours, and inactive,
        because the audit trail (append-only) refers to it by id. Your username and email are
        free again at once. A wrong `current_password` answers 401 and erases nothing.
        """
        erase_own_account(erasure["current_password"])


@blp.route("/me/password")
class PasswordChange(MethodView):
    @limit_password_checks
    @login_required
    @blp.arguments(PasswordChangeSchema)
    @blp.response(204)
    def post(self, change):
        """Change your password.

        Every token you hold stops working, except this access token and the tokens of the
        same login. A wrong current password answers 401 and changes nothing; after
        RATELIMIT_PASSWORD_FAILURES of them, the account's password changes answer 429.
        """
        confirm_current_password(
            change["current_password"], refused="wrong current password on password change"
        )
        current_user.set_password(change["new_password"])
        current_user.revoke_tokens(keep_family=get_jwt()["fam"])
        audit(
            "password_changed",
            f"user {current_user.id}",
            target=("user", current_user.id),
            # Never anything of either hash: only that it changed.
            changes={"password": "changed"},
        )


# --- a forgotten password, by email (reset links: reset_links.py) ---------------------------

LINK_ON_ITS_WAY = (
    "If an active account has this email address, a link to reset its password is on its way."
)
UNUSABLE_LINK = (
    "This reset link is not valid: it is wrong, used, replaced by a newer one, or expired."
)


def requested_detail(email: str, user: User | None) -> str:
    """What the trail says of a reset asked for: the account by id, or the address's pseudonym."""
    if user is None:
        return f"no account has this address ({pseudonym(email)}): nothing sent"
    if not user.is_active:
        return f"user {user.id} is deactivated: nothing sent"
    return f"reset link sent to user {user.id}"


@blp.route("/password/forgot")
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
        user = issue_reset_link(email)
        audit(
            "password_reset_requested",
            requested_detail(email, user),
            target=None if user is None else ("user", user.id),
        )
        return {"message": LINK_ON_ITS_WAY}


@blp.route("/password/reset")
class PasswordReset(MethodView):
    @limit_reset
    @reset_links_enabled
    @blp.arguments(PasswordResetSchema)
    @blp.response(204)
    @blp.alt_error(400, f"{UNUSABLE_LINK} Or: {UNREADABLE_BODY}")
    @blp.alt_error(503, UNAVAILABLE)
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
