from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import abort
from sqlalchemy import select

from devlab.admin.schemas import UserListSchema
from devlab.audit.trail import audit
from devlab.auth.access import admin_required
from devlab.auth.schemas import UserSchema
from devlab.blueprint import Blueprint
from devlab.extensions import db
from devlab.models import User
from devlab.pagination import PageQuerySchema, page_of

blp = Blueprint("admin", __name__, url_prefix="/admin", description="User management (admins).")

# Ids beyond PostgreSQL's integer range cannot exist: they are 404s, not database errors.
USER_ID = "<int(max=2147483647):user_id>"
NOT_FOUND = "No user has this id."


def user_or_404(user_id: int) -> User:
    return db.get_or_404(User, user_id, description="User not found.")


def lock_active_admins() -> list[int]:
    """Lock the active admins' rows until the request commits, and return their ids.

    Role changes run one at a time from here on, each seeing the last one's outcome, so
    that two admins removing each other at the same moment cannot both succeed, and an
    admin demoted meanwhile can no longer act (403).
    """
    active_admin_ids = db.session.scalars(
        select(User.id).where(User.is_admin.is_(True), User.is_active.is_(True)).with_for_update()
    ).all()
    if current_user.id not in active_admin_ids:
        audit("access_denied", "admin role lost while the request waited")
        abort(403, message="This requires the admin role.")
    return active_admin_ids


def ensure_another_active_admin(user: User) -> None:
    """Refuse to take the admin role from the last active admin: 409."""
    if lock_active_admins() == [user.id]:
        abort(409, message="This is the last active admin; make another admin first.")
    db.session.refresh(user)  # as it is now that the lock is ours


def unchanged_note(changed: bool, state: str) -> str:
    return "" if changed else f" (already {state})"


@blp.route("/users")
class Users(MethodView):
    @admin_required
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, UserListSchema)
    def get(self, query):
        """List every user, oldest account first."""
        return page_of(select(User).order_by(User.id), "users", query)


@blp.route(f"/promote/{USER_ID}")
class Promote(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NOT_FOUND)
    def post(self, user_id):
        """Make a user an admin.

        Takes effect at once, also for tokens the user already holds. Promoting an admin
        changes nothing and answers the same.
        """
        user = user_or_404(user_id)
        lock_active_admins()
        db.session.refresh(user)
        changed = not user.is_admin
        user.is_admin = True
        note = unchanged_note(changed, "an admin")
        audit("user_promoted", f"promoted user {user.id} ({user.username}){note}")
        return user


@blp.route(f"/demote/{USER_ID}")
class Demote(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NOT_FOUND)
    @blp.alt_error(409, "The user is the last active admin.")
    def post(self, user_id):
        """Take the admin role away from a user.

        Takes effect at once: the user's tokens keep working, but admin routes answer 403.
        Demoting a normal user changes nothing and answers the same.
        """
        user = user_or_404(user_id)
        ensure_another_active_admin(user)
        changed = user.is_admin
        user.is_admin = False
        note = unchanged_note(changed, "not an admin")
        audit("user_demoted", f"demoted user {user.id} ({user.username}){note}")
        return user


@blp.route(f"/users/{USER_ID}/deactivate")
class Deactivate(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NOT_FOUND)
    @blp.alt_error(409, "The user is the last active admin.")
    def post(self, user_id):
        """Deactivate an account.

        The user can no longer log in, and every token they hold is refused at once and
        stays revoked if the account is activated again.
        """
        user = user_or_404(user_id)
        ensure_another_active_admin(user)
        changed = user.is_active
        user.is_active = False
        user.revoke_tokens()
        note = unchanged_note(changed, "inactive")
        audit("user_deactivated", f"deactivated user {user.id} ({user.username}){note}")
        return user


@blp.route(f"/users/{USER_ID}/activate")
class Activate(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_error(404, NOT_FOUND)
    def post(self, user_id):
        """Activate an account again; the user logs in anew."""
        user = user_or_404(user_id)
        lock_active_admins()
        db.session.refresh(user)
        changed = not user.is_active
        user.is_active = True
        note = unchanged_note(changed, "active")
        audit("user_activated", f"activated user {user.id} ({user.username}){note}")
        return user
