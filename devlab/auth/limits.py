"""The rate limits of the auth routes: per client address, and per account for passwords.

Each `limit_*` decorator goes above a route's other decorators, so that every request counts.
The budgets are reserved by the routes themselves, before the password check they limit.
"""

from devlab.ratelimit import AttemptBudget, documented_limits, limiter, setting

LOGIN_FAILURES = AttemptBudget(
    "RATELIMIT_LOGIN_FAILURES", "login-failures", "Too many failed logins for this username"
)
PASSWORD_FAILURES = AttemptBudget(
    "RATELIMIT_PASSWORD_FAILURES",
    "password-failures",
    "Too many wrong current passwords for this account",
)

# Shared limits with a scope of their own: a count's key names the limit, not the endpoint.
limit_login = documented_limits(
    "Too many logins from your address, or too many failed logins for this username.",
    limiter.shared_limit(
        setting("RATELIMIT_LOGIN"),
        scope="login",
        error_message="Too many login attempts from your address",
    ),
)
limit_signup = documented_limits(
    "Too many signups from your address.",
    limiter.shared_limit(
        setting("RATELIMIT_SIGNUP"),
        scope="signup",
        error_message="Too many signups from your address",
    ),
)
limit_refresh = documented_limits(
    "Too many token refreshes from your address.",
    limiter.shared_limit(
        setting("RATELIMIT_REFRESH"),
        scope="refresh",
        error_message="Too many token refreshes from your address",
    ),
)
# Every route that checks the caller's current password (a password change, a profile change,
# an erasure) shares one count per address, and one budget of wrong passwords per account.
limit_password_checks = documented_limits(
    "Too many requests that check a current password from your address, or wrong current "
    "passwords for the account.",
    limiter.shared_limit(
        setting("RATELIMIT_PASSWORD"),
        scope="password",
        error_message="Too many password checks from your address",
    ),
)

# The password reset routes: RATELIMIT_PASSWORD_RESET per client address on each, and per
# typed email address on /password/forgot. The per-email budget is reserved by the route before
# it looks the address up: it counts the address as typed (lowered), whether or not an account
# has it, so its 429 tells nothing either.
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
