from devlab.health.routes import blp

__all__ = ["blp"]
