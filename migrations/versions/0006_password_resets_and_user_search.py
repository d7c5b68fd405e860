"""accounts people run on their own: password reset tokens, and finding users by prefix

`password_reset_tokens` holds one row per reset link sent: only the SHA-256 of the link's
token (the token itself exists only in the mail), whose account, and until when it works.
A row dies with its use, with a newer request for the same account, and with any password
change; `expires_at` is indexed for the prune that removes rows past it.

`GET /admin/users?q=` matches a case-insensitive prefix of the username or the email:
`lower(column) LIKE 'prefix%'`. The unique indexes on `lower(username)` and `lower(email)`
(0001) cannot serve a LIKE unless the database's collation is C, so each gets a twin with
`text_pattern_ops`, which can, under any collation. They are built CONCURRENTLY on PostgreSQL,
outside the migration's transaction, so signups and logins do not wait for them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PREFIX_INDEXES = {"ix_users_username_prefix": "username", "ix_users_email_prefix": "email"}


def upgrade():
    op.create_table(
        "password_reset_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_reset_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_reset_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_reset_tokens_token_hash")),
    )
    op.create_index(op.f("ix_password_reset_tokens_user_id"), "password_reset_tokens", ["user_id"])
    op.create_index(
        op.f("ix_password_reset_tokens_expires_at"), "password_reset_tokens", ["expires_at"]
    )

    if op.get_bind().dialect.name != "postgresql":
        for name, column in PREFIX_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON users (lower({column}))")
        return
    with op.get_context().autocommit_block():
        for name, column in PREFIX_INDEXES.items():
            op.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                f"ON users (lower({column}) text_pattern_ops)"
            )


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        for name in PREFIX_INDEXES:
            op.execute(f"DROP INDEX {name}")
    else:
        with op.get_context().autocommit_block():
            for name in PREFIX_INDEXES:
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.drop_table("password_reset_tokens")
