"""The Blueprint every DevLab feature uses: flask-smorest's, with a stricter arguments parser."""

import json

import flask_smorest
from flask_smorest.error_handler import ErrorSchema
from marshmallow import ValidationError
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from devlab.errors import BODY_TOO_LARGE

BODY_LOCATIONS = ("json", "form", "json_or_form")
UNREADABLE_BODY = "The request body is not readable: malformed JSON, or broken chunked encoding."


class ArgumentsParser(FlaskParser):
    """webargs' parser, stricter where webargs would guess or fail.

    A JSON body that Python's reader gives up on is a 400: webargs turns only syntax errors into
    400s, while nesting deeper than the recursion limit raises RecursionError, and an integer of
    more than 4,300 digits ValueError, both 500s. A query parameter given twice is a 422 unless
    its field takes a list: `?page=2&page=1` is no integer, and webargs would take the first.
    """

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return core.missing
        try:
            return core.parse_json(req.get_data(cache=True))
        except json.JSONDecodeError:
            raise  # webargs' own handling: an empty body is "missing", the rest a 400
        except (RecursionError, ValueError) as error:
            return self._handle_invalid_json_error(error, req)

    def load_querystring(self, req, schema):
        arguments = super().load_querystring(req, schema)
        single = {field.data_key or name for name, field in schema.fields.items()}
        single -= arguments.multiple_keys
        repeated = sorted(name for name in single if len(req.args.getlist(name)) > 1)
        if repeated:
            raise ValidationError({name: ["Give this parameter only once."] for name in repeated})
        return arguments


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
        """flask-smorest's `arguments`; a request body also documents its 400 and 413."""
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
