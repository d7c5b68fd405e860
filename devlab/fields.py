"""Marshmallow fields shared by the blueprints' schemas."""

import re

from marshmallow import ValidationError, fields, validate

# In the OpenAPI document: no NUL. Lone surrogates are refused too, but a pattern cannot say
# so: JSON Schema tools read patterns as Unicode text, in which no lone surrogate exists.
STORABLE_TEXT_PATTERN = "^[^\\u0000]*$"


class SafeString(fields.String):
    """A string PostgreSQL and the password hasher can take as it is.

    JSON can carry a NUL character or a lone UTF-16 surrogate (`"\\u0000"`, `"\\ud800"`):
    PostgreSQL rejects the first and UTF-8 cannot encode the second. Refusing them here turns
    what would be a 500 into a 422 that names the field.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # A Regexp validator documents its own, narrower pattern, which the metadata would hide.
        if not any(isinstance(validator, validate.Regexp) for validator in self.validators):
            self.metadata = {"pattern": STORABLE_TEXT_PATTERN, **self.metadata}

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
        metadata = {"format": "email", **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)
        self.validators.insert(0, validate.Email(error="Not a valid email address."))


class QueryInteger(fields.Integer):
    """A whole number in a query string, written in plain ASCII digits.

    Python's int() also reads "+5", "1_0", " 7 " and other scripts' digits (Arabic-Indic);
    accepting those would make the API more lenient than its documentation.
    """

    def _validated(self, value):
        if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,19}", value):
            raise self.make_error("invalid")
        return super()._validated(value)
