"""The rate limit of exports: RATELIMIT_AUDIT_EXPORT per admin, reserved before the export.

An export of the whole trail keeps one of a worker's threads and PostgreSQL busy for as long
as it streams (seconds per million rows, longer for a slow client): a script that exported in
a loop could take every thread. Listing pages has no limit, as a page is one short read.
"""

from devlab.ratelimit import AttemptBudget, limited_per_user

AUDIT_EXPORTS = AttemptBudget("RATELIMIT_AUDIT_EXPORT", "audit-exports", "Too many exports")

# Goes below `admin_required`, which finds the user.
limit_audit_exports = limited_per_user(AUDIT_EXPORTS, "Too many exports by your account.")
