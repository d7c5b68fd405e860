from flask import current_app
from flask.views import MethodView
from flask_smorest import abort

from devlab.audit.chain import newest_row, sign_head, signing_key
from devlab.audit.limits import limit_audit_exports
from devlab.audit.reading import (
    EXPORT_MEDIA_TYPES,
    THROUGH_ID_HEADER,
    export_response,
    newest_id,
    page_of_the_trail,
    reading_of,
)
from devlab.audit.schemas import (
    AuditExportQuerySchema,
    AuditHeadSchema,
    AuditLogListSchema,
    AuditQuerySchema,
)
from devlab.audit.trail import audit
from devlab.auth.access import admin_required
from devlab.blueprint import Blueprint
from devlab.extensions import db

blp = Blueprint("audit", __name__, url_prefix="/audit", description="The audit trail (admins).")

EXPORTED = {
    "description": "The rows, streamed, oldest first.",
    "headers": {
        THROUGH_ID_HEADER: {
            "description": "The export holds the rows up to this id: the newest when it began.",
            "schema": {"type": "integer"},
        },
        "Content-Disposition": {
            "description": "attachment, with a file name",
            "schema": {"type": "string"},
        },
    },
    "content": {
        EXPORT_MEDIA_TYPES["ndjson"]: {
            "schema": {
                "type": "string",
                "description": "One JSON object a line, with every column (as in /audit/logs).",
            }
        },
        EXPORT_MEDIA_TYPES["csv"]: {
            "schema": {"type": "string", "description": "A header line, then a line a row."}
        },
    },
}


@blp.route("/logs")
class AuditLogs(MethodView):
    @admin_required
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditLogListSchema)
    def get(self, query):
        """Read the audit trail, newest first (by id), filtered by any of the parameters.

        Page by number (`page`, with `total` and `pages`), or, at any depth and at the same
        cost, by cursor: pass the `next_before_id` of a page as `before_id` (with the same
        filters) for the next one; it is null on the last page. Rows written meanwhile never
        shift a cursor's pages. Each read is itself recorded (`audit_read`, with its filters).
        """
        audit("audit_read", "listed the audit trail", changes=reading_of(query))
        return page_of_the_trail(query)


@blp.route("/logs/export")
class AuditLogExport(MethodView):
    @admin_required
    @limit_audit_exports
    @blp.arguments(AuditExportQuerySchema, location="query")
    @blp.doc(responses={"200": EXPORTED})
    def get(self, query):
        """Download the audit trail (or the rows the filters leave), oldest first, with every
        column including the hashes: verify it offline against a signed head.

        `ndjson` (the default) writes a JSON object a line; `csv` a header line, then every
        value quoted and a null as an empty cell. `created_at` is in the chain's canonical form
        (`2026-12-06T02:34:01.123456+00:00`); in CSV, `changes` is canonical JSON, and a value
        that begins with `=`, `+`, `-`, `@`, a tab, a carriage return or `'` gets a `'` in
        front (drop the first `'` of a value to read it back). The export holds the rows up to
        the newest one when it began (header `X-Audit-Through-Id`). Each export is recorded
        (`audit_read` and `audit_exported`) before its first byte is sent.
        """
        through_id = newest_id()
        export_format = query["format"]
        audit(
            "audit_read", f"exported the audit trail as {export_format}", changes=reading_of(query)
        )
        audit(
            "audit_exported",
            f"{export_format} export of the rows through id {through_id}",
            changes=reading_of(query) | {"format": export_format, "through_id": through_id},
        )
        return export_response(query, through_id)


@blp.route("/head")
class Head(MethodView):
    @admin_required
    @blp.response(200, AuditHeadSchema)
    @blp.alt_error(404, "The audit trail is empty.")
    @blp.alt_error(409, "This database keeps no hash chain (SQLite).")
    def get(self):
        """The chain's current head, signed: keep it elsewhere to prove the trail later.

        `flask audit verify --head FILE` checks kept heads against the trail: a head whose
        row is gone or changed shows that rows were deleted or rewritten since.
        """
        if db.engine.dialect.name != "postgresql":
            abort(409, message="This database keeps no hash chain; heads need PostgreSQL.")
        newest = newest_row(db.session)
        if newest is None:  # only a superuser could have emptied it
            abort(404, message="The audit trail is empty: there is no head to sign.")
        audit("audit_read", "read the signed head", changes={"filters": {}})
        return sign_head(newest, signing_key(current_app))
