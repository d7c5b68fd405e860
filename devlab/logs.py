"""Log lines: LOG_FORMAT=text (the default) or json, for the app and gunicorn alike.

`text` keeps Flask's and gunicorn's own lines, with the request's id at their end
(devlab/request_id.py, gunicorn.conf.py's access_log_format).

`json` writes one JSON object per line on stdout for every log record, the app's, gunicorn's
error log and its access log:

    {"time": "2026-11-25T10:00:00.123Z", "level": "INFO", "logger": "gunicorn.access",
     "message": "GET /notes/7 200", "pid": 4242, "request_id": "3f1c…", "method": "GET",
     "path": "/notes/7", "client": "203.0.113.9", "user_id": 1, "status": 200,
     "duration_ms": 4.12}

Every line has time (UTC, ISO 8601, milliseconds), level, logger, message and pid; a line
written while a request is handled, and its access line, have the request's id, method, path,
client address (as the audit trail records it) and the user id once it is known (the token's
user, or the account a login or signup was for); the access line adds status and duration.
`exception` holds a traceback when there is one. What a line can never hold: a query string
(the path is PATH_INFO, and `?…` is cut out of every message and traceback, gunicorn's
"Invalid request" and "Error handling request" lines among them), a header (a token), or a
body (a password). The object is written by json.dumps, so a client's text in a path cannot
start a line of its own.

Under gunicorn, `JSONLinesLogger` (gunicorn.conf.py's logger_class) puts gunicorn's loggers
and the root logger on stdout before any worker starts, and the app's records reach the root
logger. A `flask` command writes its JSON lines on stderr instead, since its stdout is the
command's output (`flask audit head >> heads.jsonl`).
"""

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping

from flask import Flask, g, has_request_context, request
from flask.logging import default_handler
from flask_jwt_extended import get_jwt_identity
from gunicorn import glogging
from sqlalchemy import inspect

from devlab.client import client_ip, ip_of
from devlab.request_id import ENVIRON_KEY as REQUEST_ID

# The id of the user a request was made by, once the app knows it; gunicorn's access line reads
# it from the environ after the app has answered.
USER_ID = "devlab.user_id"
QUERY_STRING = re.compile(r"\?[^\s'\"]+")
# No space in it, so that cutting twice (gunicorn's filter, then the JSON lines) changes nothing.
QUERY_REMOVED = "?[query-removed]"


def without_query_strings(text: str) -> str:
    """`text` with anything that looks like a query string (`?…` up to a space or quote) cut."""
    return QUERY_STRING.sub(QUERY_REMOVED, text) if "?" in text else text


class JSONLines(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": without_query_strings(record.getMessage()),
            "pid": record.process,
        }
        http = getattr(record, "http", None)  # the access line's, from JSONLinesLogger
        if http is None and has_request_context():
            http = request_fields()
        if http:
            line.update(http)
        if record.exc_info:
            line["exception"] = without_query_strings(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def request_fields() -> dict:
    """What a line written while handling a request says of it. Reads no database."""
    client = client_ip()
    fields = {
        "request_id": request.environ.get(REQUEST_ID),
        "method": request.method,
        "path": request.path,
        "client": None if client is None else str(client),
    }
    user_id = request.environ.get(USER_ID) or _token_user_id()
    if user_id is not None:
        fields["user_id"] = user_id
    return fields


def _token_user_id() -> int | None:
    """The user id of the token this request presented, once verified: its `sub` claim."""
    try:
        identity = get_jwt_identity()
    except RuntimeError:  # no token verified (yet) in this request
        return None
    return int(identity) if isinstance(identity, str) and identity.isdigit() else None


def note_the_user(response):
    """After-request hook: keep the request's user id for gunicorn's access line, which is
    written after the request is over. The token's user; else, for a successful request, the
    account its audit events name (a signup, a login). Runs before the audit hook commits, so
    reading an id loads nothing."""
    user_id = _token_user_id()
    if user_id is None and response.status_code < 400:
        for event in g.get("audit_events", ()):
            identity = inspect(event.actor).identity if event.actor is not None else None
            if identity:
                user_id = identity[0]
                break
    if user_id is not None:
        request.environ[USER_ID] = user_id
    return response


def json_lines_to(stream) -> logging.Handler:
    """Put the root logger's records out as JSON lines on `stream`, unless something already
    put them out as JSON lines (gunicorn's master, before the app existed); return that."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, JSONLines):
            return handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONLines())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


class QueryStringsCut(logging.Filter):
    """Cut query strings out of gunicorn's error log, which quotes request lines and URIs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = without_query_strings(message), ()
        return True


class GunicornLogger(glogging.Logger):
    """gunicorn's logger, whose error lines never hold a query string (LOG_FORMAT=text), and
    whose access line computes only the atoms its format names (AccessAtoms)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if not any(isinstance(f, QueryStringsCut) for f in self.error_log.filters):
            self.error_log.addFilter(QueryStringsCut())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        try:
            atoms = AccessAtoms(self, resp, req, environ, request_time)
            self.access_log.info(self.cfg.access_log_format, atoms)
        except Exception:
            self.exception("Could not write the access log line")


class AccessAtoms(Mapping):
    """gunicorn's access-log atoms, each computed when the line's format asks for it.

    gunicorn builds them all for every request, whatever the format names: every request and
    response header and every environ entry, the date, and then a copy of all of them with
    their quotes escaped (`glogging.SafeAtoms`), 43 µs of every request on this machine against
    the 8 atoms of gunicorn.conf.py's format. The atoms below are gunicorn's own, computed
    alike (tests/test_logs.py holds them equal to gunicorn's for every atom gunicorn
    documents); any other is taken from gunicorn's full set, built once for the line.
    """

    def __init__(self, logger, resp, req, environ, request_time) -> None:
        self._logger, self._resp, self._req = logger, resp, req
        self._environ, self._time = environ, request_time
        self._all = None

    def __getitem__(self, key: str):
        if key in self._CHEAP:
            value = self._CHEAP[key](self)
        elif key.startswith("{") and key.endswith(("}i", "}o")):
            value = self._header(key[1:-2].lower(), key[-1] == "i")
        else:
            if self._all is None:
                atoms = self._logger.atoms(self._resp, self._req, self._environ, self._time)
                self._all = glogging.SafeAtoms(atoms)
            return self._all[key]
        return value.replace('"', '\\"') if isinstance(value, str) else value

    def _header(self, name: str, of_request: bool):
        headers = self._req.headers if of_request else self._resp.headers
        if hasattr(headers, "items"):
            headers = headers.items()
        found = "-"
        for header, value in headers:
            if header.lower() == name:
                found = value  # the last of several, as gunicorn's dict keeps it
        return found

    def _status(self):
        status = self._resp.status
        return status.split(None, 1)[0] if isinstance(status, str) else status

    def _milliseconds(self):
        return self._time.seconds * 1000 + int(self._time.microseconds / 1000)

    _CHEAP = {
        "h": lambda atoms: atoms._environ.get("REMOTE_ADDR", "-"),
        "m": lambda atoms: atoms._environ.get("REQUEST_METHOD"),
        "U": lambda atoms: atoms._environ.get("PATH_INFO"),
        "s": _status,
        "B": lambda atoms: getattr(atoms._resp, "sent", None),
        "M": _milliseconds,
        "p": lambda atoms: f"<{os.getpid()}>",
    }

    def __iter__(self):
        return iter(self._CHEAP)

    def __len__(self) -> int:
        return len(self._CHEAP)


class JSONLinesLogger(GunicornLogger):
    """gunicorn's logger for LOG_FORMAT=json: its error and access lines, and every other
    record (through the root logger), as JSON lines on stdout."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        formatter = JSONLines()
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if not getattr(handler, "_gunicorn", False):
                    continue
                if type(handler) is logging.StreamHandler:  # "-", not a file named in errorlog
                    handler.setStream(sys.stdout)
                handler.setFormatter(formatter)
        json_lines_to(sys.stdout)

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        try:
            status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
            client = ip_of(environ.get("REMOTE_ADDR"))
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            http = {
                "request_id": environ.get(REQUEST_ID),
                "method": method,
                "path": path,
                "client": None if client is None else str(client),
                "status": int(status),
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
            }
            if environ.get(USER_ID) is not None:
                http["user_id"] = environ[USER_ID]
            self.access_log.info("%s %s %s", method, path, status, extra={"http": http})
        except Exception:
            self.exception("Could not write the access log line")


def init_app(app: Flask) -> None:
    """With LOG_FORMAT=json, the app's records go out as JSON lines. Call it after
    trail.init_app: its after-request hook must run before the audit hook's."""
    if app.config["LOG_FORMAT"] != "json":
        return
    json_lines_to(sys.stderr)
    # Flask's own handler would write the app's records a second time, as text.
    app.logger.removeHandler(default_handler)
    app.after_request(note_the_user)
