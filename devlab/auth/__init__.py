from devlab.auth.routes import blp

__all__ = ["blp"]
