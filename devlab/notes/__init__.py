from devlab.notes.routes import blp

__all__ = ["blp"]
