"""The Blueprint every DevLab feature uses: flask-smorest's, with a stricter arguments parser."""

import json
import re

import flask_smorest
from flask_smorest import abort
from marshmallow import RAISE, Schema, ValidationError
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from devlab.errors import BODY_TOO_LARGE
from devlab.extensions import ErrorSchema

BODY_LOCATIONS = ("json", "form", "json_or_form")
UNREADABLE_BODY = "The request body is not readable: malformed JSON, or broken chunked encoding."
NOT_FORM_DATA = (
    "The body is not form data (name=value pairs joined by '&'): send JSON with "
    "Content-Type: application/json, or a real form."
)
# A field name an error may repeat: a name like this was typed as a name. Anything else (a JSON
# text sent as a form, a password pasted into a key) is reported without it.
REPEATABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
UNNAMED_FIELDS = "_unnamed"
UNNAMED_FIELD_MESSAGE = (
    "Unknown field; its name is not shown, as it is no identifier of at most 64 characters."
)


class ArgumentsParser(FlaskParser):
    """webargs' parser, stricter where webargs would guess or fail.

    A JSON body that Python's reader gives up on is a 400: webargs turns only syntax errors into
    400s, while nesting deeper than the recursion limit raises RecursionError, and an integer of
    more than 4,300 digits ValueError, both 500s. A query parameter given twice is a 422 unless
    its field takes a list: `?page=2&page=1` is no integer, and webargs would take the first.
    Unknown query parameters are a 422, as unknown body fields are (webargs ignores them).

    Error bodies never repeat a value the client sent, and only field names that look like
    names. A urlencoded body that is not `name=value` pairs is a 400 saying to send JSON: such a
    body, a JSON text sent with the wrong content type, would otherwise become one field
    named after the whole text, password included.
    """

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": RAISE,
        "querystring": RAISE,
    }

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        try:
            return core.parse_json(req.get_data(cache=True))
        except json.JSONDecodeError:
            raise  # webargs' own handling: an empty body is "missing", the rest a 400
        except (RecursionError, ValueError) as error:
            return self._handle_invalid_json_error(error, req)

    def load_form(self, req, schema):
        if req.mimetype == "application/x-www-form-urlencoded":
            body = req.get_data(cache=True)
            if not all(b"=" in pair for pair in body.split(b"&") if pair):
                abort(400, message=NOT_FORM_DATA)
        return super().load_form(req, schema)

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        messages = {
            location: _without_unrepeatable_names(fields) if isinstance(fields, dict) else fields
            for location, fields in error.messages.items()
        }
        super().handle_error(
            ValidationError(messages),
            req,
            schema,
            error_status_code=error_status_code,
            error_headers=error_headers,
        )

    def parse(self, argmap, req=None, *, location=None, validate=None, **kwargs):
        """webargs' parse, except that an empty query string is loaded as `{}` straight away:
        webargs' way there (its request proxy, the location's loader, the unknown rule, its
        hooks) costs a GET /notes 27 µs for nothing to read, against the schema's own load of
        its defaults, 8 µs. Anything that fails to load so takes webargs' way, errors and all."""
        if location in ("query", "querystring") and validate is None:
            request = req if req is not None else self.get_default_request()
            if isinstance(argmap, Schema) and not request.query_string:
                try:
                    return argmap.load({})
                except ValidationError:
                    pass
        return super().parse(argmap, req, location=location, validate=validate, **kwargs)

    def load_querystring(self, req, schema):
        arguments = super().load_querystring(req, schema)
        single = {field.data_key or name for name, field in schema.fields.items()}
        single -= arguments.multiple_keys
        repeated = sorted(name for name in single if len(req.args.getlist(name)) > 1)
        if repeated:
            raise ValidationError({name: ["Give this parameter only once."] for name in repeated})
        return arguments


def _without_unrepeatable_names(fields: dict) -> dict:
    kept = {name: errors for name, errors in fields.items() if REPEATABLE_NAME.fullmatch(name)}
    if len(kept) < len(fields):
        kept[UNNAMED_FIELDS] = [UNNAMED_FIELD_MESSAGE]
    return kept


def row_id(name: str) -> str:
    """A URL part for a row's id. Ids beyond PostgreSQL's integer range cannot exist: such
    paths are 404s before any query, not database errors."""
    return f"<int(max=2147483647):{name}>"


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ArgumentsParser()
    # Login takes JSON or a form post: documented as JSON, the form added on the route.
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **flask_smorest.Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "json_or_form": "application/json",
    }

    def arguments(self, schema, *, location: str = "json", **kwargs):
        """flask-smorest's `arguments`; a request body also documents its 400 and 413.

        A schema given as a class is made once, here: webargs would make one from the class
        for every request (15 µs, a percent of a GET /notes).
        """
        if isinstance(schema, type):
            schema = schema()
        parse = super().arguments(schema, location=location, **kwargs)
        if location not in BODY_LOCATIONS:
            return parse

        def decorator(view):
            view = self.alt_error(400, UNREADABLE_BODY)(view)
            view = self.alt_error(413, BODY_TOO_LARGE)(view)
            return parse(view)

        return decorator

    def alt_error(self, status: int, description: str):
        """Document an error answer of a route, with its JSON body."""
        return self.alt_response(status, schema=ErrorSchema, description=description)
