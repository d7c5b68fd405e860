"""The service's front door: /, /health, /dbstatus, the OpenAPI document and Swagger UI."""

import re

import jsonschema_rs

from devlab.auth.schemas import DOCUMENTED_USERNAME_PATTERN
from tests.conftest import PASSWORD


def test_root_names_the_service_and_points_to_the_docs(client):
    response = client.get("/")

    assert response.status_code == 200
    body = response.get_json()
    assert body["name"] == "DevLab"
    assert body["version"] == "1.0.0"
    assert body["docs"] == "/docs"


def test_health_is_ok(client):
    assert client.get("/health").get_json() == {"status": "ok"}


def test_dbstatus_is_ok_when_postgresql_answers(client):
    response = client.get("/dbstatus")

    assert response.status_code == 200
    assert response.get_json() == {"database": "ok"}


def test_openapi_document_lists_every_route(client):
    spec = client.get("/openapi.json").get_json()

    assert spec["openapi"].startswith("3.")
    assert {
        "/",
        "/health",
        "/dbstatus",
        "/signup",
        "/login",
        "/me",
        "/notes",
        "/notes/{note_id}",
        "/admin/users",
        "/admin/promote/{user_id}",
        "/audit/logs",
    } <= set(spec["paths"])


def test_openapi_document_declares_bearer_auth_on_protected_routes(client):
    spec = client.get("/openapi.json").get_json()

    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["passwordLogin"]["flows"]["password"]["tokenUrl"] == "/login"
    paths = spec["paths"]
    for path, method in [
        ("/me", "get"),
        ("/notes", "post"),
        ("/notes/{note_id}", "delete"),
        ("/admin/users", "get"),
        ("/audit/logs", "get"),
    ]:
        assert {"bearerAuth": []} in paths[path][method]["security"], (path, method)
        assert "401" in paths[path][method]["responses"]
    assert "403" in paths["/admin/promote/{user_id}"]["post"]["responses"]
    assert "security" not in paths["/signup"]["post"]


def test_openapi_document_describes_login_as_json_and_as_a_form(client):
    spec = client.get("/openapi.json").get_json()

    content = spec["paths"]["/login"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "application/x-www-form-urlencoded"}


def test_openapi_document_never_exposes_a_password_in_responses(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]

    assert "password" not in schemas["User"]["properties"]
    assert "hashed_password" not in schemas["User"]["properties"]


def test_swagger_ui_is_served_from_our_own_files(client):
    page = client.get("/docs")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith(("/docs/assets/", "/static/")), asset
        assert client.get(asset).status_code == 200
    assert "/openapi.json" in html


def test_the_browser_favicon_is_served(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response.mimetype == "image/png"


def test_openapi_document_states_the_input_rules_the_api_enforces(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]

    assert schemas["Signup"]["properties"]["email"]["format"] == "email"
    # Its characters, without the prefix that erased accounts' names take (DELETE /me).
    assert schemas["Signup"]["properties"]["username"]["pattern"] == DOCUMENTED_USERNAME_PATTERN
    assert schemas["Note"]["properties"]["text"]["pattern"] == "^[^\\u0000]*$"
    assert schemas["Login"]["properties"]["grant_type"]["enum"] == ["password"]


def test_every_pattern_in_the_openapi_document_is_a_regex_json_schema_tools_accept(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    patterns = {
        prop["pattern"]
        for schema in schemas.values()
        for prop in schema.get("properties", {}).values()
        if "pattern" in prop
    }

    assert patterns
    for pattern in patterns:
        # Raises for a pattern that is no regex to JSON Schema tools, as a lone surrogate is.
        validator = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
        assert not validator.is_valid("nul \x00"), pattern


def test_a_signup_that_breaks_the_documented_username_pattern_answers_422(client):
    body = {"username": "al ice!", "email": "alice@example.com", "password": PASSWORD}
    signup = client.get("/openapi.json").get_json()["components"]["schemas"]["Signup"]
    validator = jsonschema_rs.validator_for(signup["properties"]["username"])

    response = client.post("/signup", json=body)

    assert not validator.is_valid(body["username"])
    assert response.status_code == 422


def test_openapi_document_gives_error_answers_their_json_body(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    for path, method, status, schema in [
        ("/notes/{note_id}", "get", "404", "Error"),
        ("/signup", "post", "409", "Error"),
        ("/login", "post", "401", "LoginFailed"),  # the error, and RFC 6749's fields
        ("/dbstatus", "get", "503", "Error"),
        ("/admin/demote/{user_id}", "post", "409", "Error"),
    ]:
        content = paths[path][method]["responses"][status]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}


def test_openapi_document_lists_each_status_without_a_catch_all_default(client):
    paths = client.get("/openapi.json").get_json()["paths"]

    operations = [
        (path, method, op)
        for path, ops in paths.items()
        for method, op in ops.items()
        if method != "parameters"
    ]
    assert all("default" not in op["responses"] for _, _, op in operations)
    for path, method, op in operations:
        statuses = set(op["responses"])
        if "requestBody" in op:
            assert {"400", "413", "422"} <= statuses, (path, method)
        if "security" in op:
            assert {"401", "503"} <= statuses, (path, method)
    assert set(paths["/health"]["get"]["responses"]) == {"200"}
    assert "503" in paths["/signup"]["post"]["responses"]
    assert "503" in paths["/login"]["post"]["responses"]


def test_a_malformed_body_answers_the_documented_400(client):
    documented = client.get("/openapi.json").get_json()["paths"]["/signup"]["post"]["responses"]

    response = client.post("/signup", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert documented["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_every_query_parameter_is_bounded_so_valid_request_lines_stay_short(client):
    """gunicorn refuses request lines over 8190 bytes (gunicorn.conf.py) with its own HTML."""
    paths = client.get("/openapi.json").get_json()["paths"]

    parameters = [
        parameter
        for ops in paths.values()
        for method, op in ops.items()
        if method != "parameters"
        for parameter in op.get("parameters", [])
        if parameter["in"] == "query"
    ]
    assert parameters
    for parameter in parameters:
        schema = parameter["schema"]
        if schema["type"] == "array":  # a repeated parameter: few items, each bounded
            items = schema["items"]
            longest = max(map(len, items["enum"])) if "enum" in items else items["maxLength"]
            # every repeat as `&name=value`, under half of gunicorn's line
            assert schema["maxItems"] * (len(parameter["name"]) + 2 + longest) <= 4096, parameter
            schema = items
        if schema["type"] == "boolean":  # `true` or `false`
            continue
        assert {"maximum", "enum", "maxLength"} & set(schema), parameter
        assert len(str(schema.get("maximum", 0))) <= 10, parameter


def test_the_refresh_route_takes_a_pasted_token_not_swagger_uis_password_login(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/token/refresh"]["post"]

    assert operation["security"] == [{"bearerAuth": []}]
