from marshmallow import fields

from devlab.auth.schemas import UserSchema
from devlab.pagination import PageSchema


class UserListSchema(PageSchema):
    users = fields.List(fields.Nested(UserSchema), required=True)
