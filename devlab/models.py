"""The tables: users, their notes, their logins' token families, and the audit trail."""

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    delete,
    false,
    func,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from devlab import passwords
from devlab.extensions import db

USERNAME_MAX = 32
EMAIL_MAX = 254
NOTE_TEXT_MAX = 10_000
# An erased account's password hash: in no hash format, so no password verifies against it
# (passwords.verify_password spends a decoy verification's time on it and answers no).
ERASED_PASSWORD_HASH = "!erased"  # noqa: S105 (a marker, not a secret)
ERASED_USERNAME_PREFIX = "deleted-"


class AccountErased(Exception):
    """The account was erased (DELETE /me): it takes no password, role or state again. Were it
    given a password, promoted or activated, a row emptied of its person would live again."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware timestamp, also on SQLite, which hands back naive values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX))
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Added after the FastAPI version; its server default keeps rows it writes valid.
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )

    notes: Mapped[list["Note"]] = relationship(back_populates="owner", passive_deletes=True)

    __table_args__ = (
        # Case-insensitive uniqueness, enforced by the database so that racing signups collide.
        Index("ix_users_username_lower", func.lower(username), unique=True),
        Index("ix_users_email_lower", func.lower(email), unique=True),
        # Twins with text_pattern_ops serve a case-insensitive prefix (LIKE 'ab%') under any
        # collation: GET /admin/users?q= (migration 0006).
        Index(
            "ix_users_username_prefix",
            func.lower(username).label("username_lower"),
            postgresql_ops={"username_lower": "text_pattern_ops"},
        ),
        Index(
            "ix_users_email_prefix",
            func.lower(email).label("email_lower"),
            postgresql_ops={"email_lower": "text_pattern_ops"},
        ),
    )

    def set_password(self, password: str) -> None:
        self.replace_password_hash(passwords.hash_password(password))

    def replace_password_hash(self, hashed: str) -> None:
        """Store a new password's hash: the one place every password change passes.

        Every reset link the account holds dies with the old password, so that a link sent
        before a change (by whatever route or command) cannot undo it.
        """
        if self.is_erased:
            raise AccountErased(f"user {self.id} was erased")
        self.hashed_password = hashed
        self.end_reset_links()

    def end_reset_links(self) -> None:
        """Delete every reset link of this account (a change of password, or of the address
        the links were mailed to, ends them)."""
        if self.id is not None:  # a new account has no links yet
            db.session.execute(
                delete(PasswordResetToken).where(PasswordResetToken.user_id == self.id)
            )

    def set_unusable_password(self) -> None:
        """No password logs in until one is chosen through a reset link."""
        self.hashed_password = passwords.UNUSABLE_HASH

    def may_log_in(self, password: str) -> bool:
        """Whether `password` is right and the account may log in, as the row is now.

        Verifying takes a while; a password change or a deactivation may commit meanwhile.
        The row is then read again under a lock, which those changes wait for (or have
        released), so a login never outlives the change that should have stopped it.
        """
        verified_hash = self.hashed_password
        if not passwords.verify_password(verified_hash, password):
            return False
        if not self.still_holds(verified_hash):
            return False
        self.upgrade_hash(password)
        return True

    def still_holds(self, verified_hash: str) -> bool:
        """Whether the row, read again under a lock held until the request commits, still has
        the password hash that was just verified and is active.

        Verifying takes a while; a password change or a deactivation that committed meanwhile
        makes the password just verified count for nothing.
        """
        db.session.refresh(self, with_for_update=True)
        return self.hashed_password == verified_hash and self.is_active

    def upgrade_hash(self, password: str) -> None:
        """Hash `password`, just verified, anew if the stored hash is not at today's costs: the
        same password, so not a change, and the account's reset links stay."""
        if passwords.needs_rehash(self.hashed_password):
            self.hashed_password = passwords.hash_password(password)

    @property
    def is_erased(self) -> bool:
        return self.hashed_password == ERASED_PASSWORD_HASH

    def erase(self) -> None:
        """Empty the account of personal data, keeping the row that the audit trail names.

        Its notes and reset links are deleted and its logins revoked; the username and email
        become `deleted-<id>` ones that no signup can take (the signup schema reserves the
        name, and `invalid` is no domain it accepts), which frees the old ones at once.
        """
        db.session.execute(delete(Note).where(Note.owner_id == self.id))
        self.end_reset_links()
        self.revoke_tokens()
        self.username = f"{ERASED_USERNAME_PREFIX}{self.id}"
        self.email = f"{ERASED_USERNAME_PREFIX}{self.id}@invalid"
        self.hashed_password = ERASED_PASSWORD_HASH
        self.is_active = False
        self.is_admin = False

    def revoke_tokens(self, keep_family: str | None = None) -> int:
        """Revoke every token this user holds, except those of the family `keep_family`;
        return how many logins that ended."""
        statement = update(TokenFamily).where(
            TokenFamily.user_id == self.id, TokenFamily.revoked_at.is_(None)
        )
        if keep_family is not None:
            statement = statement.where(TokenFamily.id != keep_family)
        return db.session.execute(statement.values(revoked_at=utcnow())).rowcount

    @classmethod
    def by_username(cls, username: str) -> "User | None":
        """The user of that name in any case. Usernames are ASCII, so a name that is not
        matches nobody (Python would lower the Kelvin sign in "\u212aim" to "kim")."""
        if not username.isascii():
            return None
        return db.session.scalar(select(cls).where(func.lower(cls.username) == username.lower()))

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username}>"


# What a client is told when a unique index rejects a row; errors.py turns these into 409s.
CONFLICT_MESSAGES = {
    "ix_users_username_lower": "That username is already taken.",
    "ix_users_email_lower": "That email address is already registered.",
}


class Note(db.Model):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    owner: Mapped[User] = relationship(back_populates="notes")

    # Serves both the foreign key and "my notes, newest first".
    __table_args__ = (Index("ix_notes_owner_id_created_at", owner_id, created_at),)


class TokenFamily(db.Model):
    """The tokens of one login: every refresh hands on the family, and revoking it ends them all.

    Each token carries its family's id in a `fam` claim. Only the refresh token whose id is
    `refresh_jti` may be used next; presenting an older one means it was stolen or replayed.
    `previous_refresh_jti` is the one used last, at `rotated_at`: presented again within
    JWT_REFRESH_REUSE_GRACE_SECONDS it is a client's retry, refused without revoking anything.
    The row outlives the family's last token by nothing: `expires_at` is when that token
    expires, and `flask prune-revocations` deletes rows past it. No token of a family outlives
    `created_at` (the login) by more than JWT_SESSION_MAX_DAYS.
    """

    __tablename__ = "token_families"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    refresh_jti: Mapped[str] = mapped_column(String(36))
    previous_refresh_jti: Mapped[str | None] = mapped_column(String(36))
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = utcnow()


class PasswordResetToken(db.Model):
    """One reset link sent: the SHA-256 of its token (the token is only in the mail), whose
    account, and until when it works. Used once; a newer request or a password change ends it."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


def _where_set(column) -> dict:
    """A partial index's predicate: only rows where `column` holds a value."""
    predicate = column.column.isnot(None)
    return {"postgresql_where": predicate, "sqlite_where": predicate}


class AuditLog(db.Model):
    """One row of the audit trail: append-only and hash-chained on PostgreSQL (migration 0004,
    devlab/audit/chain.py). `user_id` is the acting user; `target_*` what was acted on."""

    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(String(45))
    # No ON DELETE: the trail keeps its actors (users are deactivated, never deleted).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    method: Mapped[str | None] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(Text)
    status_code: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=func.now(), index=True
    )
    request_id: Mapped[str | None] = mapped_column(String(128))
    user_agent: Mapped[str | None] = mapped_column(String(256))
    target_type: Mapped[str | None] = mapped_column(String(16))
    target_id: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[dict | None] = mapped_column(
        JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    # Filled by the database (the trigger audit_logs_chain); null on SQLite, which keeps no chain.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))

    # One per filter of GET /audit/logs, its column(s) then id descending: a page is one range
    # of one index from the cursor on (migration 0005 says why these and no more).
    __table_args__ = (
        Index("ix_audit_logs_action_id", action, id.desc()),
        Index("ix_audit_logs_user_id_id", user_id, id.desc()),
        Index("ix_audit_logs_ip_id", ip, id.desc(), **_where_set(ip)),
        Index("ix_audit_logs_request_id_id", request_id, id.desc(), **_where_set(request_id)),
        Index(
            "ix_audit_logs_target_id", target_type, target_id, id.desc(), **_where_set(target_type)
        ),
    )
