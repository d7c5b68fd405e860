from flask import current_app
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

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
from devlab.admin.schemas import UserCreateSchema, UserListSchema, UserQuerySchema
from devlab.audit.trail import audit, changed
from devlab.auth.access import admin_required, lock_active_admins
from devlab.auth.accounts import ERASED, NOTHING_TO_CHANGE, change_profile
from devlab.auth.reset_links import issue_reset_link, reset_links_enabled
from devlab.auth.schemas import AcceptedSchema, ProfileChangeSchema, UserSchema
from devlab.blueprint import Blueprint, row_id
from devlab.errors import NOT_FOUND
from devlab.extensions import db
from devlab.models import AccountErased, User
from devlab.pagination import page_of

blp = Blueprint("admin", __name__, url_prefix="/admin", description="User management (admins).")

USER_ID = row_id("user_id")
NO_SUCH_USER = "No user has this id."
LAST_ADMIN_OR_ERASED = f"The user is the last active admin. Or: {ERASED}"


def user_or_404(user_id: int) -> User:
    return db.get_or_404(User, user_id, description=NOT_FOUND)


def user_to_change(user_id: int, *, takes_admin_role: bool = False) -> User:
    """The user a role or account change applies to, read under the admins' lock.

    Under that lock two admins removing each other at the same moment cannot both succeed,
    and a change that `takes_admin_role` from the last active admin is refused (409).
    """
    user = user_or_404(user_id)
    try:
        return hold_for_change(user, lock_active_admins(), takes_admin_role=takes_admin_role)
    except (LastActiveAdmin, AccountErased) as refusal:
        abort(409, message=str(refusal))


def change_user(user_id: int, change: AccountChange) -> User:
    """Make `change` to the user `user_id`, audited; a repeat answers the same."""
    user = user_to_change(user_id, takes_admin_role=change.takes_admin_role)
    make_change(change, user, record=audit)
    return user


@blp.route("/users")
class Users(MethodView):
    @admin_required
    @blp.arguments(UserQuerySchema, location="query")
    @blp.response(200, UserListSchema)
    def get(self, query):
        """List users, oldest account first: every user, or those the filters leave.

        The filters combine: `?q=al&is_admin=false` lists the users who are no admin and
        whose username or email begins with "al" (or "AL"). The page metadata counts what
        the filters leave.
        """
        filters = query.get("q"), query.get("is_admin"), query.get("is_active")
        return page_of(users_matching(*filters), "users", query)

    @admin_required
    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    @blp.alt_error(409, "The username or email is already registered.")
    def post(self, account):
        """Create an account, and mail its owner a link to choose its password.

        No admin ever knows the password. The link works for PASSWORD_RESET_MINUTES; send
        another with POST /admin/users/{user_id}/password-reset. With PASSWORD_RESET_ENABLED=0
        no link is sent, and the account has no usable password until an operator sets one.
        """
        user = User(username=account["username"], email=account["email"])
        user.is_admin = account["is_admin"]
        user.set_unusable_password()
        db.session.add(user)
        db.session.flush()  # a duplicate raises here, answered with 409 by errors.py
        audit(
            "user_created",
            f"created user {user.id}",
            target=("user", user.id),
            # Names and addresses stay out of the trail, which outlives an erasure.
            changes={"username": "set", "email": "set", **changed("is_admin", None, user.is_admin)},
        )
        if current_app.config["PASSWORD_RESET_ENABLED"]:
            issue_reset_link(user, new_account=True)
            audit(
                "password_reset_requested",
                f"reset link sent to new user {user.id}",
                target=("user", user.id),
            )
        return user


@blp.route(f"/users/{USER_ID}/password-reset")
class UserPasswordReset(MethodView):
    @admin_required
    @reset_links_enabled
    @blp.response(202, AcceptedSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, "The account is deactivated.")
    def post(self, user_id):
        """Mail a user a link to reset their password.

        Their password and tokens keep working until the link is used. Any earlier link of
        theirs stops working.
        """
        user = user_or_404(user_id)
        if not user.is_active:
            abort(409, message="This account is deactivated: activate it first.")
        issue_reset_link(user)
        audit(
            "password_reset_requested",
            f"reset link sent to user {user.id}",
            target=("user", user.id),
        )
        return {"message": "A reset link is on its way to the account's email address."}


@blp.route(f"/promote/{USER_ID}")
class Promote(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, ERASED)
    def post(self, user_id):
        """Make a user an admin.

        Takes effect at once, also for tokens the user already holds. Promoting an admin
        changes nothing and answers the same.
        """
        return change_user(user_id, PROMOTE)


@blp.route(f"/demote/{USER_ID}")
class Demote(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, LAST_ADMIN_OR_ERASED)
    def post(self, user_id):
        """Take the admin role away from a user.

        Takes effect at once: the user's tokens keep working, but admin routes answer 403.
        Demoting a normal user changes nothing and answers the same.
        """
        return change_user(user_id, DEMOTE)


@blp.route(f"/users/{USER_ID}/deactivate")
class Deactivate(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, LAST_ADMIN_OR_ERASED)
    def post(self, user_id):
        """Deactivate an account.

        The user can no longer log in, and every token they hold is refused at once and
        stays revoked if the account is activated again.
        """
        return change_user(user_id, DEACTIVATE)


@blp.route(f"/users/{USER_ID}/activate")
class Activate(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, ERASED)
    def post(self, user_id):
        """Activate an account again; the user logs in anew."""
        return change_user(user_id, ACTIVATE)


@blp.route(f"/users/{USER_ID}")
class UserById(MethodView):
    @admin_required
    @blp.arguments(ProfileChangeSchema)
    @blp.response(200, UserSchema)
    @blp.alt_error(400, f"{NOTHING_TO_CHANGE} Or: the body could not be read.")
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, f"The username or email is another account's (in any case). Or: {ERASED}")
    def patch(self, fields, user_id):
        """Change a user's email address, username, or both.

        The same rules as at signup apply. A value equal to the current one is no change.
        The user's tokens keep working.
        """
        user = db.one_or_404(
            select(User).where(User.id == user_id).with_for_update(), description=NOT_FOUND
        )
        return change_profile(user, fields)
