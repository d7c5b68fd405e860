"""Extensions, created unbound and bound to the app in `create_app()`."""

import time

import flask_jwt_extended
import flask_smorest
import marshmallow as ma
from apispec import BasePlugin
from flask import current_app
from flask_jwt_extended.config import config as jwt_config
from flask_migrate import Migrate
from flask_smorest.error_handler import ErrorSchema as SmorestErrorSchema
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    # Deterministic constraint names, so migrations can name what they change.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class ErrorSchema(SmorestErrorSchema):
    """Every error body, as devlab/errors.py writes it; for the OpenAPI document only."""

    request_id = ma.fields.String(
        required=True,
        metadata={"description": "This request's id, as in the X-Request-ID header."},
    )


class Api(flask_smorest.Api):
    # No catch-all `default` response: each operation lists every status it answers, so that
    # a client, and `make fuzz`, can tell a documented answer from a surprise.
    DEFAULT_ERROR_RESPONSE_NAME = None
    ERROR_SCHEMA = ErrorSchema


class SchemaRules(BasePlugin):
    """apispec plugin: a schema's `OPENAPI_RULES`, JSON Schema keywords about several of its
    fields at once (`anyOf`...), go into its component, beside the fields marshmallow's plugin
    documents. The schema, or the route, enforces them; this only says so to clients."""

    def schema_helper(self, name, definition, **kwargs) -> dict | None:
        return getattr(kwargs.get("schema"), "OPENAPI_RULES", None)


VERIFIED_TOKENS = "devlab.verified_tokens"
VERIFIED_TOKENS_KEPT = 10_000


class JWTManager(flask_jwt_extended.JWTManager):
    """Flask-JWT-Extended's manager, which checks a token's signature once per process.

    For every request the library parses the token three times (its claims unverified, its
    header, then both verified) and recomputes the HMAC: a tenth of the CPU of a GET /notes.
    A token it has verified is kept here with its claims, per app; the same token presented
    again reuses them once its time claims hold now (not before `nbf` and `iat`, not after
    `exp`, within JWT_DECODE_LEEWAY). Any other token, an expired one included, takes the
    library's own way, errors and all. Nothing else is skipped: the token's family and user
    are still read from the database on every request (devlab/auth/access.py). At most
    VERIFIED_TOKENS_KEPT tokens are kept; when full, the store is emptied and tokens are
    verified anew.
    """

    def _decode_jwt_from_config(self, encoded_token: str, csrf_value=None, allow_expired=False):
        if csrf_value is not None or allow_expired:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        verified = current_app.extensions.setdefault(VERIFIED_TOKENS, {})
        claims = verified.get(encoded_token)
        if claims is not None:
            now, leeway = time.time(), jwt_config.leeway
            if max(claims["nbf"], claims["iat"]) - leeway <= now < claims["exp"] + leeway:
                return dict(claims)
        claims = super()._decode_jwt_from_config(encoded_token)
        if len(verified) >= VERIFIED_TOKENS_KEPT:
            verified.clear()
        verified[encoded_token] = dict(claims)
        return claims


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
jwt = JWTManager()
api = Api()


@event.listens_for(Engine, "connect")
def _enforce_sqlite_foreign_keys(dbapi_connection, connection_record) -> None:
    """SQLite ignores ON DELETE rules unless asked; PostgreSQL always applies them."""
    if type(dbapi_connection).__module__ == "sqlite3":
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
