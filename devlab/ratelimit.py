"""Rate limits on the routes that try or spend credentials: login, signup, refresh, password.

Each route takes one decorator, placed above its other decorators so that every request
counts, even one whose body is then refused:

    @blp.route("/login")
    class Login(MethodView):
        @limit_login
        @blp.arguments(LoginSchema, location="json_or_form")
        ...

Requests count per client address: `request.remote_addr`, which ProxyFix corrects for
TRUSTED_PROXY_HOPS proxies, and for IPv6 the address's /64. `/login` also counts failed logins
(401s) per username. The rates are the RATELIMIT_* settings. A request over a limit gets a 429
in errors.py's shape with a Retry-After header, and an audit row `rate_limited` names the limit.

Counts live in Redis when RATELIMIT_STORAGE_URI names one, so all gunicorn workers and
containers share them; with `memory://` each process counts alone. If Redis stops answering,
requests are still served: each process counts in its own memory, logs one warning, and goes
back to Redis once it answers.

Flask-Limiter keeps its storage on the extension object, so it counts for the app bound last
in a process. wsgi.py makes one app per process. RATELIMIT_ENABLED is checked on every request,
so an app with limits off never counts, whichever app was bound last.
"""

import ipaddress
import logging
import math
import time
from collections.abc import Callable

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_smorest import Blueprint
from werkzeug.exceptions import HTTPException

from devlab.audit.trail import audit
from devlab.auth.schemas import could_be_a_username
from devlab.client import client_ip
from devlab.errors import error_response
from devlab.models import EMAIL_MAX

NO_USERNAME = "-"  # shorter than any username signup accepts


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


def attempted_username() -> str:
    """The username a login names, lower-cased as `User.by_username` compares it."""
    try:
        body = request.get_json(silent=True) if request.is_json else request.form
    except (HTTPException, RecursionError, ValueError):
        # Over MAX_CONTENT_LENGTH, or JSON Python cannot read: the view answers 413 or 400.
        return NO_USERNAME
    username = body.get("username") if isinstance(body, dict) else None
    if not isinstance(username, str) or not username:
        return NO_USERNAME  # the view answers 422, which never counts as a failed login
    # A longer name fails validation and never counts; the cut keeps a huge one out of Redis.
    return username.lower()[: EMAIL_MAX + 1]


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


def _setting(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


def _failed_login(response: Response) -> bool:
    return response.status_code == 401


def _documented(description: str, *limits) -> Callable:
    """One decorator that applies `limits` to a view and documents its 429."""
    too_many_requests = {
        "description": description,
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer"},
            }
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }

    def decorate(view):
        for limit in reversed(limits):
            view = limit(view)
        return Blueprint.doc(responses={"429": too_many_requests})(view)

    return decorate


# Shared limits with a scope of their own: a count's key names the limit, not the endpoint.
login_attempts = limiter.shared_limit(
    _setting("RATELIMIT_LOGIN"),
    scope="login",
    error_message="Too many login attempts from your address",
)
login_failures = limiter.shared_limit(
    _setting("RATELIMIT_LOGIN_FAILURES"),
    scope="login-failures",
    key_func=attempted_username,
    deduct_when=_failed_login,
    error_message="Too many failed logins for this username",
)

limit_login = _documented(
    "Too many logins from your address, or too many failed logins for this username.",
    login_attempts,
    login_failures,
)
limit_signup = _documented(
    "Too many signups from your address.",
    limiter.shared_limit(
        _setting("RATELIMIT_SIGNUP"),
        scope="signup",
        error_message="Too many signups from your address",
    ),
)
limit_refresh = _documented(
    "Too many token refreshes from your address.",
    limiter.shared_limit(
        _setting("RATELIMIT_REFRESH"),
        scope="refresh",
        error_message="Too many token refreshes from your address",
    ),
)
limit_password_change = _documented(
    "Too many password changes from your address.",
    limiter.shared_limit(
        _setting("RATELIMIT_PASSWORD"),
        scope="password",
        error_message="Too many password changes from your address",
    ),
)


def too_many_requests(error: RateLimitExceeded):
    """Answer 429 in the one error shape, say when to retry, and audit which limit it was."""
    limit = error.limit
    retry_after = _seconds_to_retry(limit.limit.get_expiry())
    counted = limit.key_func()
    if limit.scope == "login-failures" and not could_be_a_username(counted):
        counted = "a name that is no username (not recorded)"
    audit("rate_limited", f"{limit.scope} limit ({limit.limit}) for {counted}")
    return error_response(
        429,
        f"{error.description}; try again in {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
    )


def _seconds_to_retry(window: int) -> int:
    try:
        frees_at = limiter.current_limit.window[0]  # when the oldest counted request expires
    except Exception:  # the storage failed since the check; a whole window is always enough
        return window
    return max(1, math.ceil(frees_at - time.time()))


class _StorageUnreachableWording(logging.Filter):
    """Word Flask-Limiter's storage warning as operators search for it, and say what happens."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().lower().startswith("rate limit storage unreachable"):
            record.msg = STORAGE_UNREACHABLE
            record.args = ()
        return True


STORAGE_UNREACHABLE = (
    "rate limit storage unreachable: counting in this process's memory until it answers"
)


def init_app(app: Flask) -> None:
    app.register_error_handler(RateLimitExceeded, too_many_requests)
    # Flask-Limiter logs to a logger of its own that has only a NullHandler, so under gunicorn
    # its warnings would go nowhere; the app's logger writes to gunicorn's error log.
    limiter.logger = app.logger.getChild("ratelimit")
    if not any(isinstance(f, _StorageUnreachableWording) for f in limiter.logger.filters):
        limiter.logger.addFilter(_StorageUnreachableWording())
    if app.config["RATELIMIT_ENABLED"]:
        limiter.init_app(app)
