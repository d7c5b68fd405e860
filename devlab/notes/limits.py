"""The rate limit of note writes: RATELIMIT_NOTES_WRITE per user, reserved before the write."""

from devlab.ratelimit import AttemptBudget, limited_per_user

NOTE_WRITES = AttemptBudget("RATELIMIT_NOTES_WRITE", "note-writes", "Too many note writes")

# Goes below `login_required`, which finds the user.
limit_note_writes = limited_per_user(NOTE_WRITES, "Too many note writes by your account.")
