"""An empty query string is loaded straight into the schema (devlab/blueprint.py): the same
arguments, and the same refusal, as webargs' own way."""

import pytest
from marshmallow import Schema, fields
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from devlab.blueprint import Blueprint
from devlab.pagination import PageQuerySchema

PARSER = Blueprint.ARGUMENTS_PARSER


class Required(Schema):
    since = fields.Integer(required=True)


def webargs_own(schema, request):
    return FlaskParser.parse(PARSER, schema, request, location="query")


@pytest.mark.parametrize("query", ["", "?", "?page=2", "?page_size=5&page=3"])
def test_page_arguments_load_as_webargs_loads_them(app, query):
    with app.test_request_context("/notes" + query) as context:
        assert PARSER.parse(PageQuerySchema(), context.request, location="query") == webargs_own(
            PageQuerySchema(), context.request
        )


def test_an_empty_query_string_gives_the_schemas_defaults(app):
    with app.test_request_context("/notes") as context:
        assert PARSER.parse(PageQuerySchema(), context.request, location="query") == {
            "page": 1,
            "page_size": 20,
        }


def test_a_required_argument_missing_is_refused_as_webargs_refuses_it(app):
    schema = Required()
    with app.test_request_context("/notes") as context:
        with pytest.raises(HTTPException) as ours:
            PARSER.parse(schema, context.request, location="query")
        with pytest.raises(HTTPException) as theirs:
            webargs_own(schema, context.request)

    assert ours.value.code == theirs.value.code == 422
    assert ours.value.data == theirs.value.data
    assert ours.value.data["messages"] == {"query": {"since": ["Missing data for required field."]}}


def test_notes_without_a_query_string_get_the_first_page(client, accounts):
    headers = accounts.headers("alice")
    body = client.get("/notes", headers=headers).get_json()

    assert (body["page"], body["page_size"], body["total"]) == (1, 20, 0)
