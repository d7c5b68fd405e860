"""The rate limit of exports: RATELIMIT_AUDIT_EXPORT per admin, reserved before the export.

An export of the whole trail keeps one of a worker's threads and PostgreSQL busy for as long
as it streams (seconds per million rows, longer for a slow client): a script that exported in
a loop could take every thread. Listing pages has no limit, as a page is one short read.
"""

from functools import wraps

from flask_jwt_extended import current_user

from devlab.ratelimit import AttemptBudget, documented_limits

AUDIT_EXPORTS = AttemptBudget("RATELIMIT_AUDIT_EXPORT", "audit-exports", "Too many exports")


def limit_audit_exports(view):
    """Goes below `admin_required`, which finds the user."""

    @wraps(view)
    def counted(*args, **kwargs):
        AUDIT_EXPORTS.reserve(str(current_user.id), counted=f"user {current_user.id}")
        return view(*args, **kwargs)

    return documented_limits("Too many exports by your account.")(counted)
