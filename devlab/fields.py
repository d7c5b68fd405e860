"""Marshmallow fields shared by the blueprints' schemas."""

import re

from marshmallow import ValidationError, fields, validate

# In the OpenAPI document: no NUL. Lone surrogates are refused too, but a pattern cannot say
# so: JSON Schema tools read patterns as Unicode text, in which no lone surrogate exists.
STORABLE_TEXT_PATTERN = "^[^\\u0000]*$"


# An email address as the API takes it: a dot-atom (RFC 5321) before the @, and after it a domain
# of labels of letters, digits and inner hyphens, ending in a top-level label of 2+ letters.
# With `format: email` beside it, the document says all there is: format adds the 64-character
# limit of the part before the @, which EmailAddress checks too.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
EMAIL_LOCAL_PART_MAX = 64


class Pattern(validate.Regexp):
    """A Regexp that the whole value must match, as a JSON Schema `pattern` of `^...$` reads.

    Python's `$` also matches before a final newline, so `re.match` lets "alice\\n" through.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class EmailAddress(Pattern):
    """EMAIL_PATTERN, with at most 64 characters before the @."""

    def __init__(self) -> None:
        super().__init__(EMAIL_PATTERN, error="Not a valid email address.")

    def __call__(self, value: str) -> str:
        if len(value.partition("@")[0]) > EMAIL_LOCAL_PART_MAX:
            raise ValidationError(self.error)
        return super().__call__(value)


class SafeString(fields.String):
    """A string PostgreSQL and the password hasher can take as it is.

    JSON can carry a NUL character or a lone UTF-16 surrogate (`"\\u0000"`, `"\\ud800"`):
    PostgreSQL rejects the first and UTF-8 cannot encode the second. Refusing them here turns
    what would be a 500 into a 422 that names the field.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # A Pattern documents its own, narrower pattern, which the metadata would hide.
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
    """An email address, held to exactly the rule the OpenAPI document shows (EMAIL_PATTERN)."""

    def __init__(self, **kwargs) -> None:
        metadata = {"format": "email", **kwargs.pop("metadata", {})}
        given = kwargs.pop("validate", None)
        given = [] if given is None else [given] if callable(given) else list(given)
        super().__init__(validate=[EmailAddress(), *given], metadata=metadata, **kwargs)


class QueryInteger(fields.Integer):
    """A whole number in a query string, written in plain ASCII digits.

    Python's int() also reads "+5", "1_0", " 7 " and other scripts' digits (Arabic-Indic);
    accepting those would make the API more lenient than its documentation.
    """

    def _validated(self, value):
        if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,19}", value):
            raise self.make_error("invalid")
        return super()._validated(value)
