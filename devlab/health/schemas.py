from marshmallow import Schema, fields


class ServiceInfoSchema(Schema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    docs = fields.String(required=True, metadata={"description": "Swagger UI."})
    openapi = fields.String(required=True, metadata={"description": "The OpenAPI document."})


class HealthSchema(Schema):
    status = fields.String(required=True)


class DatabaseStatusSchema(Schema):
    database = fields.String(required=True)
