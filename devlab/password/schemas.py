from marshmallow import Schema, fields, validate

from devlab.auth.schemas import password_field
from devlab.fields import SafeEmail, SafeString
from devlab.models import EMAIL_MAX
from devlab.password.reset import TOKEN_MAX


class ForgottenPasswordSchema(Schema):
    email = SafeEmail(
        required=True,
        validate=validate.Length(max=EMAIL_MAX),
        metadata={"description": "The account's email address, in any case."},
    )


class PasswordResetSchema(Schema):
    token = SafeString(
        required=True,
        load_only=True,
        validate=validate.Length(min=1, max=TOKEN_MAX),
        metadata={"description": "The token of the reset link (after `#token=`)."},
    )
    new_password = password_field()


class AcceptedSchema(Schema):
    message = fields.String(required=True)
