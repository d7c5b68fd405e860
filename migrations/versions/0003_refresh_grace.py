"""refresh tokens' grace period

`token_families.previous_refresh_jti` and `rotated_at` remember the refresh token a family
handed on last and when, so that presenting it again within JWT_REFRESH_REUSE_GRACE_SECONDS
(a client's retry, or two tabs refreshing at once) is told apart from a replay.
Existing families have neither, as if they were never refreshed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMNs: nullable, so no table rewrite on PostgreSQL and no batch copy on SQLite.
    op.add_column(
        "token_families", sa.Column("previous_refresh_jti", sa.String(length=36), nullable=True)
    )
    op.add_column(
        "token_families", sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade():
    # Plain DROP COLUMNs (SQLite has them since 3.35): a batch copy would reflect `users` and
    # lose its expression indexes.
    op.drop_column("token_families", "rotated_at")
    op.drop_column("token_families", "previous_refresh_jti")
