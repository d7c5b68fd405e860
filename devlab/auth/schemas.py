from marshmallow import Schema, ValidationError, fields, validate

from devlab.dumping import FlatSchema
from devlab.extensions import ErrorSchema
from devlab.fields import Pattern, SafeEmail, SafeString
from devlab.models import EMAIL_MAX, USERNAME_MAX
from devlab.passwords import is_common

USERNAME_MIN = 3
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
PASSWORD_MIN = 8
PASSWORD_MAX = 1024


class UserSchema(FlatSchema):
    id = fields.Integer(dump_only=True)
    username = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    is_admin = fields.Boolean(dump_only=True)
    is_active = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)


TOO_COMMON = (
    "This is one of the 10,000 most common passwords, which attackers try first; choose another."
)


def not_common(password: str) -> None:
    if is_common(password):
        raise ValidationError(TOO_COMMON)


def password_field() -> SafeString:
    """A new password: any characters, 8 to 1024 of them, and not a common password."""
    return SafeString(
        required=True,
        load_only=True,
        validate=[validate.Length(min=PASSWORD_MIN, max=PASSWORD_MAX), not_common],
        metadata={
            "description": f"{PASSWORD_MIN} to {PASSWORD_MAX} characters of any kind; not one "
            "of the 10,000 most common passwords (in any case)."
        },
    )


class SignupSchema(Schema):
    username = SafeString(
        required=True,
        validate=[
            validate.Length(min=USERNAME_MIN, max=USERNAME_MAX),
            Pattern(USERNAME_PATTERN, error="Use only letters, digits, '_', '.' and '-'."),
        ],
        metadata={"description": "3 to 32 of A-Z a-z 0-9 _ . - (unique, any case)."},
    )
    email = SafeEmail(
        required=True,
        validate=validate.Length(max=EMAIL_MAX),
        metadata={"description": "Unique, any case. At most 64 characters before the @."},
    )
    password = password_field()


class LoginSchema(Schema):
    """JSON or an OAuth2 password-grant form (what Swagger UI's Authorize sends)."""

    username = SafeString(required=True, validate=validate.Length(min=1, max=EMAIL_MAX))
    password = SafeString(
        required=True, load_only=True, validate=validate.Length(min=1, max=PASSWORD_MAX)
    )
    # OAuth2 form fields, accepted so that standard clients work, otherwise ignored.
    grant_type = fields.String(
        load_only=True,
        validate=validate.OneOf(["password"], error="Only the 'password' grant is supported."),
        metadata={"description": "OAuth2 clients send 'password'."},
    )
    scope = fields.String(load_only=True)
    client_id = fields.String(load_only=True)
    client_secret = fields.String(load_only=True)


class PasswordChangeSchema(Schema):
    current_password = SafeString(
        required=True, load_only=True, validate=validate.Length(min=1, max=PASSWORD_MAX)
    )
    new_password = password_field()


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"description": "Always 'bearer'."})
    expires_in = fields.Integer(
        required=True, metadata={"description": "Seconds until the access token expires."}
    )
    refresh_token = fields.String(
        required=True, metadata={"description": "Send to /token/refresh; it works once."}
    )
    refresh_expires_in = fields.Integer(
        required=True, metadata={"description": "Seconds until the refresh token expires."}
    )


class LoginFailedSchema(ErrorSchema):
    """A failed login: the usual error, with RFC 6749's `error` and `error_description`."""

    error = fields.String(required=True, metadata={"example": "invalid_grant"})
    error_description = fields.String(required=True, metadata={"description": "The message."})
