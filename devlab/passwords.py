"""Password hashing with argon2id, its costs taken from the app's configuration."""

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app


def _hasher() -> PasswordHasher:
    extensions = current_app.extensions
    if "devlab.password_hasher" not in extensions:
        config = current_app.config
        extensions["devlab.password_hasher"] = PasswordHasher(
            time_cost=config["ARGON2_TIME_COST"],
            memory_cost=config["ARGON2_MEMORY_KIB"],
            parallelism=config["ARGON2_PARALLELISM"],
            type=Type.ID,
        )
    return extensions["devlab.password_hasher"]


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(hashed: str, password: str) -> bool:
    try:
        return _hasher().verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def spend_verification_time(password: str) -> None:
    """Verify against a throwaway hash, so an unknown username costs as much as a known one."""
    extensions = current_app.extensions
    if "devlab.decoy_hash" not in extensions:
        extensions["devlab.decoy_hash"] = hash_password("decoy password, never anybody's")
    verify_password(extensions["devlab.decoy_hash"], password)
