"""Password hashing: argon2id for every new hash; bcrypt and pbkdf2_sha256 still read for
accounts carried over.

Accounts from the earlier FastAPI service keep their hashes until their owner next logs in, when
`User.upgrade_hash` replaces them with argon2id, as it does argon2 hashes made with other
costs than the configured ones. That service wrote bcrypt (`$2b$`, `$2a$`, `$2y$`) at first,
then passlib's pbkdf2_sha256: `$pbkdf2-sha256$<rounds>$<salt>$<checksum>`, salt and checksum in
passlib's adapted base64 ('.' for '+', no padding). Those are read with libpass, the maintained
fork of passlib (passlib itself has had no release since 2020 and breaks with bcrypt 4.1): its
pbkdf2_sha256 handler is passlib's own, which wrote them, so it reads exactly what passlib wrote,
refuses what is malformed (rounds, salt or checksum) with a ValueError, hashes with
hashlib.pbkdf2_hmac and compares in constant time (hmac.compare_digest). Only that handler is
used; parsing the format by hand with hashlib would be ours to get right and keep right.

A failed check costs one argon2id verification at the configured costs whatever the stored
hash is (even none, for an unknown username), so that timing tells nobody which accounts
exist. The exceptions are hashes not upgraded yet: a bcrypt hash costs a bcrypt check, and an
argon2 hash with other costs a verification at those costs. A pbkdf2_sha256 check is far
cheaper than either (29,000 rounds: a few milliseconds), so a wrong password against one costs
that check and then the decoy verification too: a little more than an unknown username, never
a fraction of it.

Each worker hashes at most PASSWORD_HASHING_CONCURRENCY passwords at once, on threads of its
own. An argon2id hash at the default costs takes 64 MiB, and its lanes run in threads of their
own, outside the GIL: a burst of logins hashing at once would take every core, and every thread
of the worker, from everything else. So the hashing threads run at a lower CPU priority (nice
+10, on Linux, where argon2's lane threads inherit it from them), and further hashes queue, first
come first served; as a request waiting for a slot still holds its own thread, hashing and
queueing together take at most GUNICORN_THREADS - 1 threads, so one is always free for other
requests. A request that finds the queue full, or waits PASSWORD_HASHING_WAIT_SECONDS without a
slot, raises `HashingBusy` (errors.py: 503 with Retry-After). The decoy verification queues like
a real one, so an unknown username waits the same; each public function here takes one slot for
all the hashing it does.

New passwords must not be among the 10,000 most common (devlab/data/common-passwords.txt, from
zxcvbn; COMMON-PASSWORDS-SOURCE.txt there names the source and its licence), in any case.
"""

import base64
import os
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path

import bcrypt
from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION
from flask import Flask, current_app
from passlib.hash import pbkdf2_sha256

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_MAX_BYTES = 72
PBKDF2_SHA256_PREFIX = "$pbkdf2-sha256$"
ARGON2ID_PREFIX = "$argon2id$"
# Stored for an account whose owner has not chosen a password yet: no password matches it (a
# check costs the decoy verification, as for any hash this module cannot read).
UNUSABLE_HASH = "!unusable"
BUDGET_KEY = "devlab.hashing_budget"
# Added to the nice value of the threads that hash: other requests' CPU comes first.
HASHING_NICENESS = 10


COMMON_PASSWORDS_FILE = Path(__file__).parent / "data" / "common-passwords.txt"


@cache
def _common_passwords() -> frozenset[str]:
    return frozenset(COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").split())


def is_common(password: str) -> bool:
    """Whether `password` is one of the 10,000 most common passwords, in any case."""
    return password.lower() in _common_passwords()


class HashingBusy(Exception):
    """No hashing slot came free: the queue was full, or the wait too long."""


class _Turn:
    granted = False


class HashingBudget:
    """At most `concurrency` hashes at once in this process; up to `queue` more callers wait
    for a slot, in order of arrival, each for at most `wait_seconds`."""

    def __init__(self, concurrency: int, queue: int, wait_seconds: float) -> None:
        self.concurrency, self.queue, self.wait_seconds = concurrency, queue, wait_seconds
        self.hashing = 0
        self._waiting: deque[_Turn] = deque()
        self._changed = threading.Condition()
        # Its threads start on first use: in the worker, even if the app was made before a fork.
        self._threads = ThreadPoolExecutor(
            concurrency, thread_name_prefix="hashing", initializer=_lower_priority
        )

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def full(self) -> bool:
        """Whether a hash asked for now would be refused; the answer may change at once."""
        return self.hashing >= self.concurrency and len(self._waiting) >= self.queue

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._changed:
            if self.hashing < self.concurrency and not self._waiting:
                self.hashing += 1
            elif len(self._waiting) >= self.queue:
                raise HashingBusy
            else:
                turn = _Turn()
                self._waiting.append(turn)
                if not self._changed.wait_for(lambda: turn.granted, self.wait_seconds):
                    self._waiting.remove(turn)
                    raise HashingBusy
        try:
            yield
        finally:
            with self._changed:
                if self._waiting:
                    # Handed straight to the first in line, so no newcomer overtakes it.
                    self._waiting.popleft().granted = True
                    self._changed.notify_all()
                else:
                    self.hashing -= 1

    def run(self, work: Callable, *args):
        """Run `work` on one of the hashing threads, for a caller that holds a slot."""
        return self._threads.submit(work, *args).result()


def _lower_priority() -> None:
    """Lower this hashing thread's CPU priority; argon2's lane threads, started from it,
    inherit it."""
    if sys.platform == "linux":  # nice values are per thread there, per process elsewhere
        os.nice(HASHING_NICENESS)


def init_app(app: Flask) -> None:
    """Give the app its hashing budget, shared by the threads of this worker process."""
    config = app.config
    threads, concurrency = config["GUNICORN_THREADS"], config["PASSWORD_HASHING_CONCURRENCY"]
    app.extensions[BUDGET_KEY] = HashingBudget(
        concurrency,
        queue=max(threads - 1, concurrency) - concurrency,
        wait_seconds=config["PASSWORD_HASHING_WAIT_SECONDS"],
    )


def hashing_slot():
    """Hold one of this worker's hashing slots for the block; raise HashingBusy if none comes."""
    return current_app.extensions[BUDGET_KEY].slot()


def refuse_if_hashing_is_full() -> None:
    """Raise HashingBusy now if a hash would find the queue full.

    For work before the hash, such as a login's user lookup: in a flood of logins, those bound
    to be refused cost no database query. The queue may fill meanwhile; the hash is then
    refused as usual.
    """
    if current_app.extensions[BUDGET_KEY].full:
        raise HashingBusy


def _hashed(work: Callable, *args):
    """What `work` returns, computed on a hashing thread (the caller holds a slot)."""
    return current_app.extensions[BUDGET_KEY].run(work, *args)


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
    with hashing_slot():
        return _hashed(_hasher().hash, password)


def verify_password(hashed: str, password: str) -> bool:
    """Whether `password` is the one `hashed` was made from; a hash we cannot read matches none."""
    with hashing_slot():
        return _verify(hashed, password)


def _verify(hashed: str, password: str) -> bool:
    if hashed.startswith(BCRYPT_PREFIXES):
        return _verify_bcrypt(hashed, password)
    if hashed.startswith(PBKDF2_SHA256_PREFIX):
        return _verify_pbkdf2_sha256(hashed, password)
    if _is_argon2(hashed):
        try:
            return _hashed(_hasher().verify, hashed, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            pass  # refused before any hashing was done
    _spend_verification_time(password)
    return False


def _is_argon2(hashed: str) -> bool:
    """Whether `hashed` reads as an encoded argon2 hash; only verifying checks the rest."""
    if not hashed.isascii():
        return False
    try:
        extract_parameters(hashed)
    except InvalidHashError:
        return False
    return True


def _verify_bcrypt(hashed: str, password: str) -> bool:
    attempt = password.encode()
    if len(attempt) > BCRYPT_MAX_BYTES:
        # bcrypt reads 72 bytes at most (bcrypt 4.1 and later raise instead). Never truncate:
        # that would let in anything that starts with the 72 bytes of the real password.
        _spend_verification_time(password)
        return False
    try:
        return _hashed(bcrypt.checkpw, attempt, hashed.encode("ascii"))
    except ValueError:  # a malformed cost or salt, or a hash that is not ASCII
        _spend_verification_time(password)
        return False


def _verify_pbkdf2_sha256(hashed: str, password: str) -> bool:
    try:
        if _hashed(pbkdf2_sha256.verify, password, hashed):
            return True
    except (ValueError, TypeError):  # a malformed hash: rounds, salt or checksum unreadable
        pass
    # Far cheaper than argon2id: without this, a wrong password would answer sooner for these
    # accounts than for an unknown username, and tell which accounts exist.
    _spend_verification_time(password)
    return False


def needs_rehash(hashed: str) -> bool:
    """Whether a hash that has just verified should be replaced with one at the configured costs."""
    if not hashed.startswith(ARGON2ID_PREFIX):
        return True
    return _hasher().check_needs_rehash(hashed)


def spend_verification_time(password: str) -> None:
    """Verify `password` against a hash that nothing matches, at the configured argon2id costs.

    An unknown username then costs as much as a known one with a wrong password, queue included.
    """
    with hashing_slot():
        _spend_verification_time(password)


def _spend_verification_time(password: str) -> None:
    with suppress(VerifyMismatchError):
        _hashed(_hasher().verify, _decoy_hash(), password)


def _decoy_hash() -> str:
    """An argon2id hash with the configured costs and a random digest.

    It is written out rather than computed, so the first unknown username a worker sees costs
    one verification like every other, not a hash and a verification.
    """
    extensions = current_app.extensions
    if "devlab.decoy_hash" not in extensions:
        hasher = _hasher()
        salt, digest = (
            base64.b64encode(secrets.token_bytes(size)).decode().rstrip("=")
            for size in (hasher.salt_len, hasher.hash_len)
        )
        extensions["devlab.decoy_hash"] = (
            f"{ARGON2ID_PREFIX}v={ARGON2_VERSION}"
            f"$m={hasher.memory_cost},t={hasher.time_cost},p={hasher.parallelism}"
            f"${salt}${digest}"
        )
    return extensions["devlab.decoy_hash"]
