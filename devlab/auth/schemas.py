import re
import string

from marshmallow import Schema, ValidationError, fields, validate

from devlab.auth.reset_links import TOKEN_MAX
from devlab.dumping import FlatSchema
from devlab.extensions import ErrorSchema
from devlab.fields import Pattern, SafeEmail, SafeString
from devlab.models import EMAIL_MAX, ERASED_USERNAME_PREFIX, USERNAME_MAX
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


# Erased accounts are renamed `deleted-<id>` (User.erase): nobody else may take such a name,
# or an erasure would clash with it.


def not_an_erased_accounts_name(username: str) -> None:
    if username.lower().startswith(ERASED_USERNAME_PREFIX):
        raise ValidationError(f"Names that begin with '{ERASED_USERNAME_PREFIX}' are reserved.")


def character_class(characters: set[str]) -> str:
    """A regular expression's class of exactly `characters`, runs of letters or digits written
    as ranges, any other character escaped on its own."""
    runs: list[list[int]] = []
    for code in sorted(map(ord, characters)):
        if runs and code == runs[-1][1] + 1 and chr(code).isalnum():
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return (
        "["
        + "".join(
            re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
            for a, b in runs
        )
        + "]"
    )


def pattern_not_beginning_with(prefix: str, allowed: set[str]) -> str:
    """The JSON Schema `pattern` of strings of `allowed` characters that do not begin with
    `prefix`, in any case. Written without lookahead, which not every JSON Schema tool
    reads: a string either differs from the prefix at one of its characters (after matching
    the ones before), or ends before the prefix does."""
    anything = character_class(allowed)
    alternatives = []
    for position, character in enumerate(prefix):
        matched = "".join(character_class({c.lower(), c.upper()}) for c in prefix[:position])
        other = character_class(allowed - {character.lower(), character.upper()})
        ending = "|$" if position else ""
        alternatives.append(f"{matched}(?:{other}{anything}*{ending})")
    return f"^(?:{'|'.join(alternatives)})$"


USERNAME_CHARACTERS = set(string.ascii_letters + string.digits + "_.-")
# What the OpenAPI document says of a username: its characters, and the reserved prefix (the
# validators above say the same, each with a message of its own).
DOCUMENTED_USERNAME_PATTERN = pattern_not_beginning_with(
    ERASED_USERNAME_PREFIX, USERNAME_CHARACTERS
)


def username_field(**kwargs) -> SafeString:
    """A username: 3 to 32 of A-Z a-z 0-9 _ . -, unique in any case (the database checks that)."""
    return SafeString(
        validate=[
            validate.Length(min=USERNAME_MIN, max=USERNAME_MAX),
            Pattern(USERNAME_PATTERN, error="Use only letters, digits, '_', '.' and '-'."),
            not_an_erased_accounts_name,
        ],
        metadata={
            "description": "3 to 32 of A-Z a-z 0-9 _ . - (unique, any case); not beginning "
            f"with '{ERASED_USERNAME_PREFIX}'.",
            "pattern": DOCUMENTED_USERNAME_PATTERN,
        },
        **kwargs,
    )


def email_field(**kwargs) -> SafeEmail:
    """An email address, unique in any case (the database checks that)."""
    return SafeEmail(
        validate=validate.Length(max=EMAIL_MAX),
        metadata={"description": "Unique, any case. At most 64 characters before the @."},
        **kwargs,
    )


def current_password_field() -> SafeString:
    """The caller's password, to confirm a change to their account."""
    return SafeString(
        required=True, load_only=True, validate=validate.Length(min=1, max=PASSWORD_MAX)
    )


class SignupSchema(Schema):
    username = username_field(required=True)
    email = email_field(required=True)
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
    current_password = current_password_field()
    new_password = password_field()


class ProfileChangeSchema(Schema):
    """A new email address, a new username, or both; the signup's rules apply to each."""

    # Neither is a 400 (devlab/auth/accounts.py); the document says so as a rule on the object.
    OPENAPI_RULES = {"anyOf": [{"required": ["email"]}, {"required": ["username"]}]}

    email = email_field()
    username = username_field()


class OwnProfileChangeSchema(ProfileChangeSchema):
    current_password = current_password_field()


class AccountErasureSchema(Schema):
    current_password = current_password_field()


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
