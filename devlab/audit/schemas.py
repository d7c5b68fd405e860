from marshmallow import fields, validate

from devlab.audit.trail import ACTIONS, TARGET_TYPES
from devlab.dumping import FlatSchema
from devlab.fields import QueryInteger
from devlab.pagination import PageQuerySchema, PageSchema


class AuditLogSchema(FlatSchema):
    id = fields.Integer()
    action = fields.String()
    detail = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    user_id = fields.Integer(allow_none=True, metadata={"description": "The acting user."})
    method = fields.String(allow_none=True)
    path = fields.String(allow_none=True)
    status_code = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    request_id = fields.String(
        allow_none=True, metadata={"description": "The request's X-Request-ID."}
    )
    user_agent = fields.String(allow_none=True, metadata={"description": "First 256 characters."})
    target_type = fields.String(
        allow_none=True,
        validate=validate.OneOf(TARGET_TYPES),
        metadata={"description": "What the action was done to."},
    )
    target_id = fields.String(allow_none=True)
    changes = fields.Dict(
        allow_none=True,
        metadata={"description": 'What changed, as {"field": {"old": ..., "new": ...}}.'},
    )
    prev_hash = fields.String(
        allow_none=True, metadata={"description": "row_hash of the row before (the chain)."}
    )
    row_hash = fields.String(allow_none=True)


class AuditQuerySchema(PageQuerySchema):
    action = fields.String(
        validate=validate.OneOf(ACTIONS), metadata={"description": "Only this action."}
    )
    user_id = QueryInteger(
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={"description": "Only rows whose acting user has this id."},
    )


class AuditLogListSchema(PageSchema):
    logs = fields.List(fields.Nested(AuditLogSchema), required=True)


class AuditHeadSchema(FlatSchema):
    """A signed head: `flask audit head` prints the same JSON."""

    id = fields.Integer(required=True, metadata={"description": "The newest row's id."})
    row_hash = fields.String(required=True, metadata={"description": "That row's hash."})
    at = fields.String(required=True, metadata={"description": "When it was signed (UTC)."})
    signature = fields.String(
        required=True,
        metadata={
            "description": 'Ed25519 over the canonical JSON of {"at", "id", "row_hash"}, '
            "base64; `flask audit public-key` prints the key that verifies it."
        },
    )
