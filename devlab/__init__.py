"""DevLab: a JSON REST backend for accounts, notes and an audit trail."""

from pathlib import Path

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Config, finalize_config
from devlab import (
    admin,
    audit,
    auth,
    cli,
    db_timeout,
    docs,
    headers,
    health,
    notes,
    ratelimit,
    request_body,
)
from devlab.audit import trail
from devlab.errors import register_error_handlers
from devlab.extensions import api, db, jwt, migrate

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DevLab(Flask):
    def make_default_options_response(self) -> Response:
        """Answer OPTIONS with 204 and the Allow header; Flask's own is an empty text/html 200."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment, with `test_config` overriding any setting."""
    instance_path = (test_config or {}).get("INSTANCE_PATH") or Config.INSTANCE_PATH
    app = DevLab(__name__, instance_path=instance_path)
    app.config.from_object(Config)
    if test_config:
        app.config.from_mapping(test_config)
    finalize_config(app.config, app.instance_path)

    request_body.init_app(app)
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        # Believe X-Forwarded-For only as far as our own proxies wrote it.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    db.init_app(app)
    db_timeout.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    jwt.init_app(app)
    api.init_app(app)
    for feature in (auth, notes, admin, audit, health):
        api.register_blueprint(feature.blp)
    docs.init_app(app)
    register_error_handlers(app)
    # Before the audit hook: after-request hooks run last-registered first, so the headers also
    # reach the 503 that hook answers when its commit fails.
    headers.init_app(app)
    ratelimit.init_app(app)
    trail.init_app(app)
    cli.init_app(app)
    return app
