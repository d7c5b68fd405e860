from devlab.audit.routes import blp

__all__ = ["blp"]
