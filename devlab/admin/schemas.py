from marshmallow import fields

from devlab.auth.schemas import SignupSchema, UserSchema
from devlab.pagination import PageSchema


class UserCreateSchema(SignupSchema):
    """An account an admin makes: signup's rules, but no password (its owner chooses one)."""

    class Meta:
        exclude = ("password",)

    is_admin = fields.Boolean(
        load_default=False, metadata={"description": "Make it an admin account."}
    )


class UserListSchema(PageSchema):
    users = fields.List(fields.Nested(UserSchema), required=True)
