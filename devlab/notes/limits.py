"""The rate limit of note writes: RATELIMIT_NOTES_WRITE per user, reserved before the write."""

from functools import wraps

from flask_jwt_extended import current_user

from devlab.ratelimit import AttemptBudget, documented_limits

NOTE_WRITES = AttemptBudget("RATELIMIT_NOTES_WRITE", "note-writes", "Too many note writes")


def limit_note_writes(view):
    """Goes below `login_required`, which finds the user."""

    @wraps(view)
    def counted(*args, **kwargs):
        NOTE_WRITES.reserve(str(current_user.id), counted=f"user {current_user.id}")
        return view(*args, **kwargs)

    return documented_limits("Too many note writes by your account.")(counted)
