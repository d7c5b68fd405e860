from flask import current_app
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from devlab.admin.schemas import UserCreateSchema, UserListSchema
from devlab.audit.trail import audit, changed
from devlab.auth.access import admin_required, lock_active_admins
from devlab.auth.schemas import UserSchema
from devlab.blueprint import Blueprint, row_id
from devlab.errors import NOT_FOUND
from devlab.extensions import db
from devlab.models import User
from devlab.pagination import PageQuerySchema, page_of
from devlab.password.reset import issue_reset_link, reset_links_enabled
from devlab.password.schemas import AcceptedSchema

blp = Blueprint("admin", __name__, url_prefix="/admin", description="User management (admins).")

USER_ID = row_id("user_id")
NO_SUCH_USER = "No user has this id."


def user_or_404(user_id: int) -> User:
    return db.get_or_404(User, user_id, description=NOT_FOUND)


def user_to_change(user_id: int, *, takes_admin_role: bool = False) -> User:
    """The user a role or account change applies to, read under the admins' lock.

    Under that lock two admins removing each other at the same moment cannot both succeed,
    and a change that `takes_admin_role` from the last active admin is refused (409).
    """
    user = user_or_404(user_id)
    active_admin_ids = lock_active_admins()
    if takes_admin_role and active_admin_ids == [user.id]:
        abort(409, message="This is the last active admin; make another admin first.")
    db.session.refresh(user)  # as it is now that the lock is ours
    return user


def audit_change(action: str, done: str, user: User, field: str, old: bool, already: str) -> None:
    """Audit a role or account change; an idempotent repeat says the user already was so."""
    new = getattr(user, field)
    repeat = "" if old != new else f" (already {already})"
    audit(
        action,
        f"{done} user {user.id} ({user.username}){repeat}",
        target=("user", user.id),
        changes=changed(field, old, new),
    )


@blp.route("/users")
class Users(MethodView):
    @admin_required
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, UserListSchema)
    def get(self, query):
        """List every user, oldest account first."""
        return page_of(select(User).order_by(User.id), "users", query)

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
    def post(self, user_id):
        """Make a user an admin.

        Takes effect at once, also for tokens the user already holds. Promoting an admin
        changes nothing and answers the same.
        """
        user = user_to_change(user_id)
        was_admin = user.is_admin
        user.is_admin = True
        audit_change("user_promoted", "promoted", user, "is_admin", was_admin, "an admin")
        return user


@blp.route(f"/demote/{USER_ID}")
class Demote(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, "The user is the last active admin.")
    def post(self, user_id):
        """Take the admin role away from a user.

        Takes effect at once: the user's tokens keep working, but admin routes answer 403.
        Demoting a normal user changes nothing and answers the same.
        """
        user = user_to_change(user_id, takes_admin_role=True)
        was_admin = user.is_admin
        user.is_admin = False
        audit_change("user_demoted", "demoted", user, "is_admin", was_admin, "not an admin")
        return user


@blp.route(f"/users/{USER_ID}/deactivate")
class Deactivate(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    @blp.alt_error(409, "The user is the last active admin.")
    def post(self, user_id):
        """Deactivate an account.

        The user can no longer log in, and every token they hold is refused at once and
        stays revoked if the account is activated again.
        """
        user = user_to_change(user_id, takes_admin_role=True)
        was_active = user.is_active
        user.is_active = False
        user.revoke_tokens()
        audit_change("user_deactivated", "deactivated", user, "is_active", was_active, "inactive")
        return user


@blp.route(f"/users/{USER_ID}/activate")
class Activate(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NO_SUCH_USER)
    def post(self, user_id):
        """Activate an account again; the user logs in anew."""
        user = user_to_change(user_id)
        was_active = user.is_active
        user.is_active = True
        audit_change("user_activated", "activated", user, "is_active", was_active, "active")
        return user
