from marshmallow import fields, validate

from devlab.auth.schemas import SignupSchema, UserSchema
from devlab.fields import QueryBoolean, SafeString
from devlab.models import EMAIL_MAX
from devlab.pagination import PageQuerySchema, PageSchema


class UserQuerySchema(PageQuerySchema):
    """The filters of the user list: each narrows it, and any of them combine (all must hold)."""

    q = SafeString(
        validate=validate.Length(min=1, max=EMAIL_MAX),
        metadata={
            "description": "Only users whose username or email begins with this, in any case "
            "(`%` and `_` match only themselves)."
        },
    )
    is_admin = QueryBoolean(metadata={"description": "Only admins (`true`) or only the others."})
    is_active = QueryBoolean(
        metadata={"description": "Only active accounts (`true`) or only deactivated ones."}
    )


class UserCreateSchema(SignupSchema):
    """An account an admin makes: signup's rules, but no password (its owner chooses one)."""

    class Meta:
        exclude = ("password",)

    is_admin = fields.Boolean(
        load_default=False, metadata={"description": "Make it an admin account."}
    )


class UserListSchema(PageSchema):
    users = fields.List(fields.Nested(UserSchema), required=True)
