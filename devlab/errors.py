"""The one JSON error shape, `{code, status, message[, errors], request_id}`, for every failure.

flask-smorest's aborts and validation errors, werkzeug's routing errors, database errors, a full
password-hashing queue and anything unexpected all leave through here; no exception text ever
reaches a client. `request_id` is the request's X-Request-ID (devlab/request_id.py), so that a
client reporting an error can name the request, and the server's log lines of it be found. The
OpenAPI document describes this shape with devlab/extensions.py's ErrorSchema.
"""

from http import HTTPStatus

from flask import Flask, current_app, jsonify
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolExhausted
from werkzeug.exceptions import HTTPException

from devlab import metrics
from devlab.db_timeout import RETRY_SECONDS
from devlab.extensions import db
from devlab.models import CONFLICT_MESSAGES
from devlab.passwords import HashingBusy
from devlab.request_id import current_request_id

UNREADABLE_INPUT = {400: "The request body could not be read (malformed JSON?)."}
BODY_TOO_LARGE = "The request body is larger than 1 MiB."
# Every 404 says this, whether no route matched or no row (of the caller's) has the id: an
# answer that differed would tell which ids exist.
NOT_FOUND = "Not found."
# Our words for werkzeug's errors whose own description says too little.
PLAIN_MESSAGES = {404: NOT_FOUND, 413: BODY_TOO_LARGE}
DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly."
DATABASE_BUSY = "Another change to the same data is under way; try again."
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's lock_timeout ran out
HASHING_BUSY = "Too many passwords are being checked at the moment; try again shortly."


def error_response(
    status: int,
    message: str,
    *,
    errors: dict | None = None,
    headers=None,
    oauth_error: str | None = None,
):
    """The one JSON error shape. `oauth_error` adds RFC 6749's `error` and `error_description`
    (the message), which OAuth2 clients such as Swagger UI's Authorize dialog show."""
    body = {"code": status, "status": HTTPStatus(status).phrase, "message": message}
    if errors:
        body["errors"] = errors
    if oauth_error:
        body["error"], body["error_description"] = oauth_error, message
    body["request_id"] = current_request_id()
    response = jsonify(body)
    response.status_code = status
    if headers:
        response.headers.extend(headers)
    return response


def database_error_response(error: SQLAlchemyError):
    """Answer for a database failure: 409 for a broken unique rule, 503 when it is down."""
    db.session.rollback()
    if isinstance(error, IntegrityError):
        metrics.database_error("conflict")
        return error_response(409, conflict_message(error))
    if isinstance(error, PoolExhausted):  # every pooled connection stayed busy for pool_timeout
        metrics.database_error("busy")
        current_app.logger.warning("Database connection pool exhausted")
        return error_response(503, DATABASE_BUSY, headers={"Retry-After": "1"})
    if isinstance(error, OperationalError):
        if getattr(error.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
            metrics.database_error("busy")
            return error_response(503, DATABASE_BUSY, headers={"Retry-After": "1"})
        metrics.database_error("unavailable")
        current_app.logger.warning("Database unavailable: %s", type(error.orig).__name__)
        # As often as a worker that found PostgreSQL silent probes it again (db_timeout.py).
        return error_response(
            503, DATABASE_UNAVAILABLE, headers={"Retry-After": str(RETRY_SECONDS)}
        )
    metrics.database_error("other")
    current_app.logger.exception("Database error")
    return error_response(500, "Internal server error.")


def conflict_message(error: IntegrityError) -> str:
    """Say which unique rule a rejected row broke, without the database's own text."""
    reported = str(error.orig)
    for constraint, message in CONFLICT_MESSAGES.items():
        if constraint in reported:
            return message
    return "The request conflicts with existing data."


def hashing_busy_response(_error: HashingBusy):
    """Answer a request that found no password-hashing slot free (devlab/passwords.py)."""
    return error_response(503, HASHING_BUSY, headers={"Retry-After": "1"})


def handle_http_exception(error: HTTPException):
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    if errors:
        default = UNREADABLE_INPUT.get(error.code, "Invalid input.")
    else:
        default = PLAIN_MESSAGES.get(error.code, error.description)
    message = data.get("message") or default
    # Keep headers such as Allow (405); our body replaces werkzeug's HTML content type.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    headers.extend((data.get("headers") or {}).items())
    return error_response(
        error.code or 500,
        message,
        errors=errors,
        headers=headers,
        oauth_error=data.get("oauth_error"),
    )


def handle_unexpected_exception(error: Exception):
    current_app.logger.exception("Unhandled exception")
    db.session.rollback()
    return error_response(500, "Internal server error.")


def register_error_handlers(app: Flask) -> None:
    # Replaces flask-smorest's handler, which leaves out `message` on plain HTTP errors.
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(SQLAlchemyError, database_error_response)
    app.register_error_handler(HashingBusy, hashing_busy_response)
    app.register_error_handler(Exception, handle_unexpected_exception)
