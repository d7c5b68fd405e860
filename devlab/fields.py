"""Marshmallow fields shared by the blueprints' schemas."""

from marshmallow import ValidationError, fields, validate


class SafeString(fields.String):
    """A string PostgreSQL and the password hasher can take as it is.

    JSON can carry a NUL character or a lone UTF-16 surrogate (`"\\u0000"`, `"\\ud800"`):
    PostgreSQL rejects the first and UTF-8 cannot encode the second. Refusing them here turns
    what would be a 500 into a 422 that names the field.
    """

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("Must be valid Unicode text.") from None
        return text


class SafeEmail(SafeString):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.validators.insert(0, validate.Email(error="Not a valid email address."))
