"""Response headers that harden every answer, errors included, and CORS when it is configured.

Every response forbids MIME sniffing, framing and referrers. Everything but the static files of
the docs is `no-store`, since answers carry tokens and users' data. JSON gets a
Content-Security-Policy that allows nothing; Swagger UI on /docs gets just what it needs, with
no inline script (devlab/templates/swagger_ui.html loads static/swagger-ui-init.js instead).
FORCE_HTTPS adds HSTS. CORS_ORIGINS turns on CORS for those origins only, without credentials:
clients send bearer tokens, not cookies; every answer then carries `Vary: Origin`.
"""

from flask import Flask, Response, current_app, request
from flask_cors import CORS

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
DOCS_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # Swagger UI sets style attributes
        "img-src 'self' data:",  # and draws its icons from data: URLs
        "connect-src 'self'",  # fetches /openapi.json, and /login for Authorize
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
DOCS_ENDPOINT = "api-docs.openapi_swagger_ui"
# Files that never hold a token or user data keep the caching their views gave them.
CACHEABLE_ENDPOINTS = frozenset({"swagger_ui_asset", "favicon", "static"})
HSTS = "max-age=31536000; includeSubDomains"

CORS_METHODS = ["GET", "POST", "PATCH", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type"]


def harden(response: Response) -> Response:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Content-Security-Policy"] = (
        DOCS_POLICY if request.endpoint == DOCS_ENDPOINT else JSON_POLICY
    )
    if request.endpoint not in CACHEABLE_ENDPOINTS or response.status_code >= 400:
        headers["Cache-Control"] = "no-store"
    if current_app.config["FORCE_HTTPS"]:
        headers["Strict-Transport-Security"] = HSTS
    if current_app.config["CORS_ORIGINS"]:
        # CORS headers depend on the Origin sent, so any cache must key on it; flask-cors says
        # so only when it lists more than one origin.
        response.vary.add("Origin")
    if response.status_code == 204:
        # No content, so no content type (flask-smorest and Flask set application/json).
        headers.pop("Content-Type", None)
    return response


def init_app(app: Flask) -> None:
    app.after_request(harden)
    origins = app.config["CORS_ORIGINS"]
    if origins:
        CORS(
            app,
            origins=origins,
            methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            supports_credentials=False,
            # Without these, flask-cors would list every allowed origin on requests that send
            # no Origin, and wrap Flask's exception handlers (after_request reaches errors too).
            always_send=False,
            intercept_exceptions=False,
        )
