"""Every request's id: in its X-Request-ID response header, in its error body (`request_id`),
in gunicorn's access log line and in every line the app logs while handling it.

The id is given by WSGI middleware that wraps the whole app, so it comes before anything else a
request meets (reading a chunked body, Flask-Limiter, the token check, the database breaker),
and its header reaches every answer the app makes, errors included, whichever hook or handler
made it or failed after it.

An incoming X-Request-ID is kept only when TRUSTED_PROXY_HOPS says that proxies of ours stand in
front (they set it, or pass on a client's), and only when it matches VALID_ID: a value that is
short, printable ASCII without spaces or commas cannot split a header, forge a log field or
join two headers sent twice (servers join them with a comma). Anything else, or any incoming
value when no proxy is trusted, is replaced by a new UUID, never echoed.
"""

import logging
import re
import uuid

from apispec import BasePlugin
from flask import Flask, has_request_context, request
from flask.logging import default_handler

HEADER = "X-Request-ID"
INCOMING = "HTTP_X_REQUEST_ID"
ENVIRON_KEY = "devlab.request_id"
# The pattern, written without \w or \d, which would take any Unicode letter or digit.
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# Flask's own format for the app's log lines, with the request's id at the end.
LOG_FORMAT = "[%(asctime)s] %(levelname)s in %(module)s: %(message)s request_id=%(request_id)s"


def current_request_id() -> str | None:
    """The id of the request being handled, or None outside a request."""
    if not has_request_context():
        return None
    return request.environ.get(ENVIRON_KEY)


class RequestIds:
    """WSGI middleware: give each request its id, and add it to the answer's headers."""

    def __init__(self, wsgi_app, *, trust_incoming: bool) -> None:
        self.wsgi_app = wsgi_app
        self.trust_incoming = trust_incoming

    def __call__(self, environ, start_response):
        incoming = environ.get(INCOMING) if self.trust_incoming else None
        if incoming is not None and VALID_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = str(uuid.uuid4())
        environ[ENVIRON_KEY] = request_id

        def start_response_with_id(status, headers, exc_info=None):
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_response_with_id)


class RequestIdInLogs(logging.Filter):
    """Give each log record the id of the request it was written in ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


class DocumentedHeader(BasePlugin):
    """apispec plugin: document X-Request-ID on every response of every operation, in one place.

    Responses given by component name (UNAUTHORIZED, ...) get it in the component; the others in
    the operation.
    """

    COMPONENT = "REQUEST_ID"
    DOC = {
        "description": (
            "This request's id: the one our proxy sent, if valid, else a new UUID. Error bodies "
            "carry it as `request_id`, and the server's log lines of the request include it."
        ),
        "required": True,
        "schema": {"type": "string", "pattern": f"^{VALID_ID.pattern}$"},
    }

    def init_spec(self, spec) -> None:
        super().init_spec(spec)
        spec.components.header(self.COMPONENT, self.DOC)

    def response_helper(self, response: dict, **kwargs) -> dict:
        return {"headers": {**response.get("headers", {}), HEADER: self.COMPONENT}}

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for operation in (operations or {}).values():
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict) and "$ref" not in response:
                    response.setdefault("headers", {})[HEADER] = self.COMPONENT


def init_app(app: Flask) -> None:
    """Wrap the app so that ids come first; call it after every other wrapper of wsgi_app."""
    trust_incoming = app.config["TRUSTED_PROXY_HOPS"] > 0
    app.wsgi_app = RequestIds(app.wsgi_app, trust_incoming=trust_incoming)
    # The app's log lines go through Flask's handler, which Flask adds to the app's logger unless
    # logging was configured otherwise (gunicorn configures only loggers of its own).
    if not any(isinstance(f, RequestIdInLogs) for f in default_handler.filters):
        default_handler.addFilter(RequestIdInLogs())
    default_handler.setFormatter(logging.Formatter(LOG_FORMAT))
