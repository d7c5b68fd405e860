"""Marshmallow fields shared by the blueprints' schemas."""

import ipaddress
import re
from datetime import datetime, timedelta

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


class QueryBoolean(fields.Boolean):
    """`true` or `false` in a query string, as the OpenAPI document writes a boolean.

    marshmallow's Boolean also reads "1", "yes", "on", "T" and more; accepting those would make
    the API more lenient than its documentation.
    """

    truthy = {"true"}
    falsy = {"false"}


class IPAddress(fields.String):
    """An IPv4 or IPv6 address, loaded in the form the audit trail stores (devlab/client.py):
    compressed, lower case, an IPv4-mapped IPv6 address as its IPv4 address. A zone id
    (`fe80::1%eth0`) is refused, as the trail never stores one.
    """

    default_error_messages = {"invalid": "Not an IPv4 or IPv6 address."}

    def __init__(self, **kwargs) -> None:
        metadata = {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}], "maxLength": 45}
        super().__init__(metadata=metadata | kwargs.pop("metadata", {}), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise self.make_error("invalid") from None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None:
                raise self.make_error("invalid")
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
        return str(ip)


# RFC 3339's date-time, the ISO 8601 form JSON Schema's `format: date-time` means: a date, a
# time, and a UTC offset (Z, or +hh:mm / -hh:mm), which is never optional.
OFFSET_DATE_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


class OffsetDateTime(fields.String):
    """A moment as RFC 3339 writes it (`2026-12-06T09:30:00+01:00`, `2026-12-06T08:30:00Z`),
    loaded as an aware datetime. A time without its offset is refused rather than guessed.

    Python's fromisoformat() also reads forms JSON Schema does not allow (`20261206T0830Z`, a
    comma before the fraction, `+0100`), so the shape is checked first. Digits past the
    microsecond are dropped (nine at most: nanoseconds); a leap second (23:59:60) is the first
    moment of the next day, as PostgreSQL reads it.
    """

    MAX_LENGTH = len("2026-12-06T09:30:00.123456789+01:00")
    default_error_messages = {
        "invalid": "Not a date and time with a UTC offset, such as 2026-12-06T09:30:00+01:00.",
    }

    def __init__(self, **kwargs) -> None:
        documented = {"format": "date-time", "maxLength": self.MAX_LENGTH}
        super().__init__(metadata=documented | kwargs.pop("metadata", {}), **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.isoformat()

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        text = super()._deserialize(value, attr, data, **kwargs)
        match = OFFSET_DATE_TIME.fullmatch(text) if len(text) <= self.MAX_LENGTH else None
        if match is None:
            raise self.make_error("invalid")
        day, hour, minute, second, fraction, offset = match.groups()
        leap = (hour, minute, second) == ("23", "59", "60")
        fraction = (fraction or "")[:6].ljust(6, "0")
        offset = "+00:00" if offset in ("Z", "z") else offset
        text = f"{day}T{hour}:{minute}:{'59' if leap else second}.{fraction}{offset}"
        try:
            moment = datetime.fromisoformat(text)
            return moment + timedelta(seconds=1) if leap else moment
        except (ValueError, OverflowError):  # a day, hour or offset out of range
            raise self.make_error("invalid") from None
