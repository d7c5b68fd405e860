"""The rate limits of the password reset routes: RATELIMIT_PASSWORD_RESET per client address on
each, and per typed email address on /password/forgot.

The per-address limits go above a route's other decorators, so that every request counts. The
per-email budget is reserved by the route before it looks the address up: it counts the
address as typed (lowered), whether or not an account has it, so its 429 tells nothing either.
"""

from devlab.ratelimit import AttemptBudget, documented_limits, limiter, setting

FORGOT_PER_EMAIL = AttemptBudget(
    "RATELIMIT_PASSWORD_RESET",
    "password-forgot-email",
    "Too many reset links asked for this email address",
)

limit_forgot = documented_limits(
    "Too many reset links asked for from your address, or for this email address.",
    limiter.shared_limit(
        setting("RATELIMIT_PASSWORD_RESET"),
        scope="password-forgot",
        error_message="Too many reset links asked for from your address",
    ),
)
limit_reset = documented_limits(
    "Too many password resets from your address.",
    limiter.shared_limit(
        setting("RATELIMIT_PASSWORD_RESET"),
        scope="password-reset",
        error_message="Too many password resets from your address",
    ),
)
