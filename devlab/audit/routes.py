from flask.views import MethodView
from sqlalchemy import select

from devlab.audit.schemas import AuditLogListSchema, AuditQuerySchema
from devlab.auth.access import admin_required
from devlab.blueprint import Blueprint
from devlab.models import AuditLog
from devlab.pagination import page_of

blp = Blueprint("audit", __name__, url_prefix="/audit", description="The audit trail (admins).")


@blp.route("/logs")
class AuditLogs(MethodView):
    @admin_required
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditLogListSchema)
    def get(self, query):
        """Read the audit trail, newest first, optionally by action or acting user."""
        newest_first = select(AuditLog).order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
        if "action" in query:
            newest_first = newest_first.where(AuditLog.action == query["action"])
        if "user_id" in query:
            newest_first = newest_first.where(AuditLog.user_id == query["user_id"])
        return page_of(newest_first, "logs", query)
