"""DevLab: a JSON REST backend for accounts, notes and an audit trail."""

import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from flask import Flask, Request, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask_orjson import OrjsonProvider
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Map, RequestRedirect

from config import Config, finalize_config
from devlab import (
    cli,
    db_timeout,
    db_transactions,
    docs,
    headers,
    logs,
    mail,
    metrics,
    passwords,
    ratelimit,
    request_body,
    request_id,
)
from devlab.admin import routes as admin_routes
from devlab.audit import routes as audit_routes
from devlab.audit import trail
from devlab.auth import access
from devlab.auth import routes as auth_routes
from devlab.errors import register_error_handlers
from devlab.extensions import SchemaRules, api, db, jwt, migrate
from devlab.health import routes as health_routes
from devlab.notes import routes as notes_routes

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class RoutesWithoutRedirects(Map):
    """Werkzeug's URL map, without merging slashes: `/admin//users` is a 404 like any path no
    route has, not a redirect whose target would come from the request's Host header."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("merge_slashes", False)
        super().__init__(*args, **kwargs)


class PermanentRedirect(HTTPException):
    """A redirect in the JSON error shape, to a path on this server (errors.py renders it)."""

    code = 308
    description = "This resource lives at the path in the Location header."

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def get_headers(self, environ=None, scope=None) -> list[tuple[str, str]]:
        return [("Location", self.path)]


class JSONProvider(OrjsonProvider):
    """orjson writes every JSON body: a page of 20 notes in 4 µs, where the standard library's
    json took 40 to 58. Keys stay sorted, as Flask's own provider writes them; text is UTF-8
    rather than ASCII escapes. What orjson refuses (text with a lone surrogate, which JSON can
    only escape) Flask's own provider still writes and reads, so it never becomes a 500."""

    option = orjson.OPT_SORT_KEYS

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        self.fallback = DefaultJSONProvider(app)

    def dumps(self, obj, **kwargs) -> str:
        try:
            return super().dumps(obj, **kwargs)
        except TypeError:
            return self.fallback.dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except orjson.JSONDecodeError:
            return self.fallback.loads(s, **kwargs)


class DevLab(Flask):
    url_map_class = RoutesWithoutRedirects
    json_provider_class = JSONProvider

    def raise_routing_exception(self, request: Request):
        """Any redirect werkzeug's routing still makes (a rule with a trailing slash asked for
        without it) is answered as JSON with a relative Location: Flask would send werkzeug's
        HTML page, with an absolute URL built from the Host header."""
        error = request.routing_exception
        if isinstance(error, RequestRedirect):
            target = urlsplit(error.new_url)
            raise PermanentRedirect(target.path + (f"?{target.query}" if target.query else ""))
        super().raise_routing_exception(request)

    def make_default_options_response(self) -> Response:
        """Answer OPTIONS with 204 and the Allow header; Flask's own is an empty text/html 200."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def _delay_for_tests() -> None:
    """DEVLAB_TEST_REQUEST_DELAY_SECONDS: keep a request marked `X-Test-Delay: 1` in flight."""
    if request.headers.get("X-Test-Delay") == "1":
        time.sleep(current_app.config["TEST_REQUEST_DELAY_SECONDS"])


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment, with `test_config` overriding any setting."""
    instance_path = (test_config or {}).get("INSTANCE_PATH") or Config.INSTANCE_PATH
    app = DevLab(__name__, instance_path=instance_path)
    app.config.from_object(Config)
    if test_config:
        app.config.from_mapping(test_config)
    finalize_config(app.config, app.instance_path)

    request_body.init_app(app)
    passwords.init_app(app)
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        # Believe X-Forwarded-For only as far as our own proxies wrote it.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    db.init_app(app)
    db_timeout.init_app(app)
    db_transactions.init_app(app)
    metrics.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    jwt.init_app(app)
    access.init_app(app)
    plugins = [request_id.DocumentedHeader(), SchemaRules()]
    api.init_app(app, spec_kwargs={"extra_plugins": plugins})
    for feature in (auth_routes, notes_routes, admin_routes, audit_routes, health_routes):
        api.register_blueprint(feature.blp)
    docs.init_app(app)
    register_error_handlers(app)
    # Before the audit hook: after-request hooks run last-registered first, so the headers also
    # reach the 503 that hook answers when its commit fails.
    headers.init_app(app)
    ratelimit.init_app(app)
    # Before the audit hook, so that its hook runs after the commit: only committed mail goes.
    mail.init_app(app)
    trail.init_app(app)
    logs.init_app(app)
    cli.init_app(app)
    if app.config["TEST_REQUEST_DELAY_SECONDS"]:
        app.before_request(_delay_for_tests)
    # Last, so that its middleware wraps all the others: a request gets its id before anything
    # else happens to it, and every answer gets the header.
    request_id.init_app(app)
    return app
