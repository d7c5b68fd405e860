from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from devlab.audit.trail import ACTIONS, TARGET_TYPES
from devlab.dumping import FlatSchema
from devlab.fields import IPAddress, OffsetDateTime, Pattern, QueryInteger
from devlab.pagination import PageQuerySchema


class AuditLogSchema(FlatSchema):
    id = fields.Integer()
    action = fields.String()
    detail = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    user_id = fields.Integer(allow_none=True, metadata={"description": "The acting user."})
    username = fields.String(
        allow_none=True,
        metadata={
            "description": "The acting user's username as it is now (the row itself names "
            "users by id only); `deleted-<id>` once the account is erased."
        },
    )
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


# A request id as the X-Request-ID header carries it, and what a target's id may look like (a
# row id, a token family's UUID): no filter value the trail could not hold, or the SQL chain
# function encode differently from Python.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"
TARGET_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
EXPORT_FORMATS = ("ndjson", "csv")


class AuditFilterSchema(Schema):
    """The filters of the audit trail, the listing's and the export's: each narrows the rows,
    and any of them combine (all must hold)."""

    action = fields.List(
        fields.String(validate=validate.OneOf(ACTIONS)),
        validate=validate.Length(max=len(ACTIONS)),
        metadata={
            "description": "Only these actions; repeat the parameter for more than one "
            "(`action=login_failed&action=access_denied`)."
        },
    )
    user_id = QueryInteger(
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={"description": "Only rows whose acting user has this id."},
    )
    target_type = fields.String(
        validate=validate.OneOf(TARGET_TYPES),
        metadata={"description": "Only rows about this kind of thing."},
    )
    target_id = fields.String(
        validate=[validate.Length(max=64), Pattern(TARGET_ID_PATTERN)],
        metadata={"description": "Only rows about the thing with this id; needs `target_type`."},
    )
    ip = IPAddress(metadata={"description": "Only rows of requests from this address."})
    request_id = fields.String(
        validate=[validate.Length(max=128), Pattern(REQUEST_ID_PATTERN)],
        metadata={"description": "Only rows of the request with this X-Request-ID."},
    )
    since = OffsetDateTime(
        metadata={"description": "Only rows created at or after this moment (with its offset)."}
    )
    until = OffsetDateTime(
        metadata={"description": "Only rows created before this moment (with its offset)."}
    )

    @validates_schema
    def target_id_needs_its_type(self, data, **_kwargs) -> None:
        if "target_id" in data and "target_type" not in data:
            raise ValidationError("Give target_type with target_id.", "target_id")


class AuditQuerySchema(AuditFilterSchema, PageQuerySchema):
    before_id = QueryInteger(
        validate=validate.Range(min=1, max=2**31 - 1),
        metadata={
            "description": "Only rows with a smaller id: the `next_before_id` of the page before. "
            "The response then has no `total` and `pages`."
        },
    )


class AuditExportQuerySchema(AuditFilterSchema):
    format = fields.String(
        load_default="ndjson",
        validate=validate.OneOf(EXPORT_FORMATS),
        metadata={"description": "`ndjson` (one JSON object a line) or `csv`."},
    )


class AuditLogListSchema(FlatSchema):
    logs = fields.List(fields.Nested(AuditLogSchema), required=True)
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    total = fields.Integer(
        metadata={"description": "Rows on all pages; left out when `before_id` was given."}
    )
    pages = fields.Integer(
        metadata={"description": "Number of pages; left out when `before_id` was given."}
    )
    next_before_id = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "`before_id` of the next page; null on the last page."},
    )


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
