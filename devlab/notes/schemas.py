from marshmallow import Schema, fields, validate

from devlab.dumping import FlatSchema
from devlab.fields import SafeString
from devlab.models import NOTE_TEXT_MAX
from devlab.pagination import PageSchema


class NoteSchema(FlatSchema):
    id = fields.Integer(dump_only=True)
    text = SafeString(required=True, validate=validate.Length(min=1, max=NOTE_TEXT_MAX))
    owner_id = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class NoteUpdateSchema(Schema):
    text = SafeString(required=True, validate=validate.Length(min=1, max=NOTE_TEXT_MAX))


class NoteListSchema(PageSchema):
    notes = fields.List(fields.Nested(NoteSchema), required=True)
