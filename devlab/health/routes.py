from flask import current_app
from flask.views import MethodView
from sqlalchemy import text

from devlab.blueprint import Blueprint
from devlab.errors import DATABASE_UNAVAILABLE
from devlab.extensions import db
from devlab.health.schemas import DatabaseStatusSchema, HealthSchema, ServiceInfoSchema

blp = Blueprint("health", __name__, description="What this service is, and whether it is up.")


@blp.route("/")
class ServiceInfo(MethodView):
    @blp.response(200, ServiceInfoSchema)
    def get(self):
        """Name and version of the service, and where its documentation is."""
        return {
            "name": "DevLab",
            "version": current_app.config["API_VERSION"],
            "docs": "/docs",
            "openapi": "/openapi.json",
        }


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self):
        """Liveness: the process answers. Does not touch the database."""
        return {"status": "ok"}


@blp.route("/dbstatus")
class DatabaseStatus(MethodView):
    @blp.response(200, DatabaseStatusSchema)
    @blp.alt_error(503, DATABASE_UNAVAILABLE)
    def get(self):
        """Readiness: the database answers a query (503 when it does not)."""
        db.session.execute(text("SELECT 1"))
        return {"database": "ok"}
