from devlab.admin.routes import blp

__all__ = ["blp"]
