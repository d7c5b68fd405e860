from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from devlab.admin.schemas import UserListSchema
from devlab.audit.trail import audit
from devlab.auth.access import admin_required
from devlab.auth.schemas import UserSchema
from devlab.extensions import db
from devlab.models import User
from devlab.pagination import PageQuerySchema, page_of

blp = Blueprint("admin", __name__, url_prefix="/admin", description="User management (admins).")


@blp.route("/users")
class Users(MethodView):
    @admin_required
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, UserListSchema)
    def get(self, query):
        """List every user, oldest account first."""
        return page_of(select(User).order_by(User.id), "users", query)


@blp.route("/promote/<int(max=2147483647):user_id>")
class Promote(MethodView):
    @admin_required
    @blp.response(200, UserSchema)
    @blp.alt_response(404, description="No user has this id.")
    def post(self, user_id):
        """Make a user an admin.

        Takes effect at once, also for tokens the user already holds. Promoting an admin
        changes nothing and answers the same.
        """
        user = db.get_or_404(User, user_id, description="User not found.")
        already = " (already an admin)" if user.is_admin else ""
        user.is_admin = True
        audit("user_promoted", f"promoted user {user.id} ({user.username}){already}")
        return user
