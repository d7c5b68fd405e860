"""Rate limiting's machinery: per client address (Flask-Limiter) and per account (budgets).

This module knows no route: the limits themselves live beside the routes they guard
(devlab/auth/limits.py, devlab/notes/limits.py), built from `limiter.shared_limit`,
`AttemptBudget` and `documented_limits` here.

Per address, Flask-Limiter counts every request to a limited route. Each route takes one
decorator, placed above its other decorators so that every request counts, even one whose body
is then refused:

    @blp.route("/login")
    class Login(MethodView):
        @limit_login
        @blp.arguments(LoginSchema, location="json_or_form")
        ...

An address is `request.remote_addr`, which ProxyFix corrects for TRUSTED_PROXY_HOPS proxies,
and for IPv6 the address's /64. Flask-Limiter takes any exception raised while it checks a
limit for a storage outage, so its keys are built from nothing but that address.

Per account, an `AttemptBudget` is reserved before the work it limits and in one atomic step,
so that a burst of concurrent requests cannot outrun it (at most RATELIMIT_LOGIN_FAILURES
passwords are checked per username however many logins arrive at once), and a slot can be given
back (a login that succeeded). Flask-Limiter cannot do this: it counts a request toward a
conditional limit only after the response is made, so every request in flight passes, and it
has no way to hand a slot back. A budget's key is built from validated values only, and kept
as a keyed hash (devlab/audit/trail.py's `pseudonym`), so nothing a client typed reaches Redis.

A request over a limit gets a 429 in errors.py's shape with a Retry-After header, and an audit
row `rate_limited` names the limit. The rates are the RATELIMIT_* settings.

Counts live in Redis when RATELIMIT_STORAGE_URI names one, so all gunicorn workers and
containers share them; with `memory://` each process counts alone. If Redis stops answering (a
connection error or a timeout, nothing else), requests are still served: each process counts
in its own memory, logs one warning, and goes back to Redis once it answers.

Flask-Limiter keeps its storage on the extension object, so it counts for the app bound last
in a process. wsgi.py makes one app per process. RATELIMIT_ENABLED is checked on every request,
so an app with limits off never counts, whichever app was bound last. Budgets keep their store
on their app.
"""

import contextlib
import ipaddress
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps

import redis
from flask import Flask, current_app
from flask_jwt_extended import current_user
from flask_limiter import Limiter, RateLimitExceeded
from flask_smorest import Blueprint
from limits import parse

from devlab import metrics
from devlab.audit.trail import audit
from devlab.client import client_ip
from devlab.errors import error_response

# Only these mean that Redis is away; any other error is a bug, answered as one (500).
STORAGE_FAILURES = (redis.ConnectionError, redis.TimeoutError)
STORE_KEY = "devlab.attempt_store"
KEY_PREFIX = "LIMITS"  # as Flask-Limiter's own keys (limits' RedisStorage.PREFIX)
REDIS_RETRY_SECONDS = 5


def client_address() -> str:
    """The address a request counts against.

    An IPv6 client counts by its /64, since one subscriber usually holds a whole /64 and
    could otherwise use a new address for every try. Requests with no usable address (a
    forged X-Forwarded-For) share one count.
    """
    ip = client_ip()
    if ip is None:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)


limiter = Limiter(
    key_func=client_address,
    # Counts the requests of the last window exactly, so a burst at a window's edge gets no
    # extra tries and Retry-After is exact.
    strategy="moving-window",
    # Redis unreachable: count in this process's memory, warn once, keep serving.
    in_memory_fallback_enabled=True,
    # Any other failure of the limiter is logged, and the request served.
    swallow_errors=True,
)


@limiter.request_filter
def _limits_off() -> bool:
    return not current_app.config["RATELIMIT_ENABLED"]


def setting(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


TOO_MANY_REQUESTS_HEADERS = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}


def documented_limits(description: str, *limits) -> Callable:
    """One decorator that applies `limits` to a view and documents its 429."""
    too_many_requests = {
        "description": description,
        "headers": TOO_MANY_REQUESTS_HEADERS,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }

    def decorate(view):
        for limit in reversed(limits):
            view = limit(view)
        return Blueprint.doc(responses={"429": too_many_requests})(view)

    return decorate


# --- per account: budgets reserved before the work ---------------------------------------


class TooManyAttempts(Exception):
    """A budget is spent; errors are answered by `too_many_attempts`."""

    def __init__(self, budget: "AttemptBudget", counted: str, retry_after: int) -> None:
        super().__init__(budget.scope)
        self.budget, self.counted, self.retry_after = budget, counted, retry_after


@dataclass
class Reservation:
    """One reserved slot of a budget; `give_back` returns it (a login that succeeded)."""

    store: "AttemptStore | None" = None
    key: str = ""
    slot: str = ""

    def give_back(self) -> None:
        if self.store is not None:
            self.store.release(self.key, self.slot)

    @contextmanager
    def given_back_on(self, *errors: type[Exception]) -> Iterator[None]:
        """Give the slot back if the block raises one of `errors`: work refused before it was
        done (no hashing slot free) is no attempt."""
        try:
            yield
        except errors:
            self.give_back()
            raise


@dataclass(frozen=True)
class AttemptBudget:
    """At most `setting`'s rate of attempts per key, each reserved before it is made."""

    setting: str
    scope: str
    message: str

    def reserve(self, identity: str, *, counted: str) -> Reservation:
        """Reserve a slot for `identity` (validated, normalized), or raise TooManyAttempts.

        `counted` names the identity in the audit trail when the budget is spent.
        """
        if not current_app.config["RATELIMIT_ENABLED"]:
            return Reservation()
        rate = parse(current_app.config[self.setting])
        store: AttemptStore = current_app.extensions[STORE_KEY]
        key = f"{self.scope}/{rate.amount}/{rate.get_expiry()}/{identity}"
        slot = uuid.uuid4().hex
        wait = store.reserve(key, slot, rate.amount, rate.get_expiry())
        if wait is not None:
            raise TooManyAttempts(self, counted, max(1, math.ceil(wait)))
        return Reservation(store, key, slot)

    def limit(self, rate: str) -> str:
        return f"{self.scope} limit ({parse(rate)})"


# Redis holds a budget as a sorted set of slots scored by when they were reserved. The script
# runs atomically: it drops slots older than the window, and adds one only if fewer than the
# limit remain. It answers 0 for a reserved slot, else the milliseconds until one frees.
RESERVE_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window_ms = tonumber(ARGV[2]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + window_ms - now_ms)
end
redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window_ms)
return 0
"""


@dataclass
class MemoryAttempts:
    """The same moving windows in this process's memory, for memory:// and Redis outages."""

    slots: dict[str, dict[str, float]] = field(default_factory=dict)
    windows: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reservations_since_sweep: int = 0

    def reserve(self, key: str, slot: str, amount: int, window: float) -> float | None:
        now = time.monotonic()
        with self.lock:
            self._sweep_now_and_then(now)
            held = {s: at for s, at in self.slots.get(key, {}).items() if at > now - window}
            if len(held) >= amount:
                self.slots[key] = held
                return min(held.values()) + window - now
            held[slot] = now
            self.slots[key], self.windows[key] = held, window
            return None

    def release(self, key: str, slot: str) -> None:
        with self.lock:
            self.slots.get(key, {}).pop(slot, None)

    def _sweep_now_and_then(self, now: float) -> None:
        """Forget windows that have passed, so that a spray of names cannot fill memory."""
        self.reservations_since_sweep += 1
        if self.reservations_since_sweep < 1000:
            return
        self.reservations_since_sweep = 0
        for key in [k for k, held in self.slots.items() if not held]:
            del self.slots[key]
        for key, held in list(self.slots.items()):
            if max(held.values()) <= now - self.windows[key]:
                del self.slots[key]


def limited_per_user(budget: AttemptBudget, description: str) -> Callable:
    """A view decorator that reserves one of `budget` per acting user before the view runs,
    and documents its 429. It goes below the decorator that checks the token (the user is
    the token's)."""

    def decorate(view):
        @wraps(view)
        def counted(*args, **kwargs):
            budget.reserve(str(current_user.id), counted=f"user {current_user.id}")
            return view(*args, **kwargs)

        return documented_limits(description)(counted)

    return decorate


class AttemptStore:
    """Budgets' counts: in Redis when one is configured, else (or while it is away) in memory."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.logger = app.logger.getChild("ratelimit")
        self.memory = MemoryAttempts()
        self.redis = None
        self.redis_back_at = 0.0
        uri = config["RATELIMIT_STORAGE_URI"]
        if not uri.startswith("memory://"):
            options = config["RATELIMIT_STORAGE_OPTIONS"]
            self.prefix = options.get("key_prefix", KEY_PREFIX)
            self.redis = redis.Redis.from_url(
                uri,
                socket_connect_timeout=options.get("socket_connect_timeout"),
                socket_timeout=options.get("socket_timeout"),
            )
            self.reserve_script = self.redis.register_script(RESERVE_SCRIPT)

    def reserve(self, key: str, slot: str, amount: int, window: int) -> float | None:
        """Reserve `slot` under `key` if fewer than `amount` are held in the last `window`
        seconds; else return the seconds until one frees."""
        if self._redis_answers():
            try:
                wait_ms = self.reserve_script(
                    keys=[f"{self.prefix}:{key}"], args=[amount, window, slot]
                )
            except STORAGE_FAILURES:
                self._redis_is_away()
            else:
                STORAGE_OUTAGE.over(self.logger)
                return wait_ms / 1000 if wait_ms else None
        return self.memory.reserve(key, slot, amount, window)

    def release(self, key: str, slot: str) -> None:
        if self._redis_answers():
            try:
                self.redis.zrem(f"{self.prefix}:{key}", slot)
            except STORAGE_FAILURES:
                self._redis_is_away()  # the slot stays reserved until its window passes
            else:
                return
        self.memory.release(key, slot)

    def _redis_answers(self) -> bool:
        return self.redis is not None and time.monotonic() >= self.redis_back_at

    def _redis_is_away(self) -> None:
        self.redis_back_at = time.monotonic() + REDIS_RETRY_SECONDS
        STORAGE_OUTAGE.begins(self.logger)


# --- what a limited client gets -----------------------------------------------------------


def _limited(scope: str, limit: str, counted: str, message: str, retry_after: int):
    metrics.rate_limited(scope)
    audit("rate_limited", f"{limit} for {counted}")
    return error_response(
        429,
        f"{message}; try again in {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
    )


def too_many_requests(error: RateLimitExceeded):
    """Answer 429 in the one error shape, say when to retry, and audit which limit it was."""
    limit = error.limit
    return _limited(
        limit.scope,
        f"{limit.scope} limit ({limit.limit})",
        limit.key_func(),
        error.description,
        _seconds_to_retry(limit.limit.get_expiry()),
    )


def too_many_attempts(error: TooManyAttempts):
    budget = error.budget
    rate = current_app.config[budget.setting]
    return _limited(
        budget.scope, budget.limit(rate), error.counted, budget.message, error.retry_after
    )


def _seconds_to_retry(window: int) -> int:
    try:
        frees_at = limiter.current_limit.window[0]  # when the oldest counted request expires
    except Exception:  # the storage failed since the check; a whole window is always enough
        return window
    return max(1, math.ceil(frees_at - time.time()))


# --- a storage outage, logged once ---------------------------------------------------------


class _StorageOutage:
    """Whether this process has said that the limit storage is unreachable.

    Flask-Limiter and the budgets notice an outage each on their own; operators get one warning
    per outage, worded as they search for it.
    """

    def __init__(self) -> None:
        self.announced = False

    def begins(self, logger: logging.Logger) -> None:
        if not self.announced:
            self.announced = True
            logger.warning(STORAGE_UNREACHABLE)

    def over(self, logger: logging.Logger) -> None:
        if self.announced:
            self.announced = False
            logger.info("rate limit storage answers again: counting there")


STORAGE_OUTAGE = _StorageOutage()
STORAGE_UNREACHABLE = (
    "rate limit storage unreachable: counting in this process's memory until it answers"
)


class _StorageUnreachableWording(logging.Filter):
    """Word Flask-Limiter's storage warning as operators search for it, once per outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lower()
        if message.startswith("rate limit storage unreachable"):
            if record.msg == STORAGE_UNREACHABLE:
                return True  # the budgets' own warning
            if STORAGE_OUTAGE.announced:
                return False
            STORAGE_OUTAGE.announced = True
            record.msg = STORAGE_UNREACHABLE
            record.args = ()
        elif message.startswith("rate limit storage recovered"):
            STORAGE_OUTAGE.announced = False
        return True


def init_app(app: Flask) -> None:
    app.register_error_handler(RateLimitExceeded, too_many_requests)
    app.register_error_handler(TooManyAttempts, too_many_attempts)
    app.extensions[STORE_KEY] = AttemptStore(app)
    # Flask-Limiter logs to a logger of its own that has only a NullHandler, so under gunicorn
    # its warnings would go nowhere; the app's logger writes to gunicorn's error log.
    limiter.logger = app.logger.getChild("ratelimit")
    if not any(isinstance(f, _StorageUnreachableWording) for f in limiter.logger.filters):
        limiter.logger.addFilter(_StorageUnreachableWording())
    if app.config["RATELIMIT_ENABLED"]:
        limiter.init_app(app)
        # Flask-Limiter also checks every request before its view, for default and application
        # limits. DevLab sets neither: each limited route's decorator checks its own limits,
        # and counts a request even when its body is then refused. That check had nothing to
        # do and cost about 75 µs of each request (GET /notes in-process, limits on in memory:
        # the median difference of 40 paired batches of 100, 81 and 73 µs in two runs).
        with contextlib.suppress(ValueError):
            app.before_request_funcs[None].remove(limiter._check_request_limit)
