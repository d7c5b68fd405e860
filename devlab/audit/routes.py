from flask import current_app
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from devlab.audit.chain import newest_row, sign_head, signing_key
from devlab.audit.schemas import AuditHeadSchema, AuditLogListSchema, AuditQuerySchema
from devlab.audit.trail import audit
from devlab.auth.access import admin_required
from devlab.blueprint import Blueprint
from devlab.extensions import db
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


@blp.route("/head")
class Head(MethodView):
    @admin_required
    @blp.response(200, AuditHeadSchema)
    @blp.alt_error(409, "This database keeps no hash chain (SQLite).")
    def get(self):
        """The chain's current head, signed: keep it elsewhere to prove the trail later.

        `flask audit verify --head FILE` checks kept heads against the trail: a head whose
        row is gone or changed shows that rows were deleted or rewritten since.
        """
        if db.engine.dialect.name != "postgresql":
            abort(409, message="This database keeps no hash chain; heads need PostgreSQL.")
        audit("audit_read", "read the signed head")
        return sign_head(newest_row(db.session), signing_key(current_app))
