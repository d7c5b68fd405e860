"""Chunked request bodies, held to the same rules as bodies with a Content-Length.

Without a Content-Length, werkzeug stops reading at MAX_CONTENT_LENGTH and hands the view a
body cut short instead of answering 413, and a server's error for broken chunk framing
reaches the view as an exception. This middleware reads such a body first, at most one byte
past the limit, and lets a before-request hook answer 413 or 400 in our JSON shape.
"""

from io import BytesIO

from flask import Flask, request
from flask_smorest import abort
from gunicorn.http.errors import ParseException

from devlab.errors import BODY_TOO_LARGE

TOO_LARGE = "devlab.body_too_large"
MALFORMED = "devlab.body_malformed"


class BufferChunkedBodies:
    def __init__(self, wsgi_app, max_bytes: int) -> None:
        self.wsgi_app = wsgi_app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        if environ.get("CONTENT_LENGTH") in (None, "") and environ.get("wsgi.input_terminated"):
            try:
                body = environ["wsgi.input"].read(self.max_bytes + 1)
            except (ParseException, OSError, ValueError):  # broken chunk framing
                environ[MALFORMED] = True
                body = b""
            if len(body) > self.max_bytes:
                environ[TOO_LARGE] = True
                body = b""
            environ["wsgi.input"] = BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.wsgi_app(environ, start_response)


def refuse_unreadable_bodies() -> None:
    if request.environ.get(TOO_LARGE):
        abort(413, message=BODY_TOO_LARGE)
    if request.environ.get(MALFORMED):
        abort(400, message="The request body's chunked encoding is malformed.")


def init_app(app: Flask) -> None:
    app.wsgi_app = BufferChunkedBodies(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    app.before_request(refuse_unreadable_bodies)
