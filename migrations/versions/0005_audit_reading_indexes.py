"""reading the audit trail at millions of rows: an index per filter, a quicker chain hash

`GET /audit/logs` and its export read the trail in id order (the chain's), newest or oldest
first, from a cursor (`id < before_id`, `id > after`) and under any of its filters. Each filter
that names a value gets a composite index, its column(s) then `id DESC`, so that a page is one
range of one index read from the cursor on, however many rows the table holds:

    ix_audit_logs_action_id       (action, id DESC)
    ix_audit_logs_user_id_id      (user_id, id DESC)
    ix_audit_logs_ip_id           (ip, id DESC)                       WHERE ip IS NOT NULL
    ix_audit_logs_request_id_id   (request_id, id DESC)               WHERE request_id IS NOT NULL
    ix_audit_logs_target_id       (target_type, target_id, id DESC)   WHERE target_type IS NOT NULL

Every index costs each insert, so no more than these:
- `ix_audit_logs_action` and `ix_audit_logs_user_id` (0001) go: the composites begin with
  their column and serve every query they served (a filter on the column; the foreign key's
  check on `user_id`; the newest `audit_purged` row, which `(action, id DESC)` finds at once).
- `ix_audit_logs_created_at` (0001) stays: `since` and `until` are ranges, which no composite
  would keep in id order, and the purge reads the oldest rows by it.
- The nullable columns are indexed only where they hold a value: rows of CLI commands, and of
  requests without a target, add nothing to those indexes, and a filter (`ip = ...`) implies
  the predicate, so the planner still uses them.
- No index for the unfiltered listing: the primary key is (id).

On PostgreSQL the indexes are built and dropped CONCURRENTLY, outside the migration's
transaction: a plain CREATE INDEX blocks every insert into the table until it is built (1 to
2 seconds per index at a million rows here), and every audited request inserts into it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# name: (columns, the column that must hold a value, or None)
INDEXES = {
    "ix_audit_logs_action_id": (["action", sa.text("id DESC")], None),
    "ix_audit_logs_user_id_id": (["user_id", sa.text("id DESC")], None),
    "ix_audit_logs_ip_id": (["ip", sa.text("id DESC")], "ip"),
    "ix_audit_logs_request_id_id": (["request_id", sa.text("id DESC")], "request_id"),
    "ix_audit_logs_target_id": (["target_type", "target_id", sa.text("id DESC")], "target_type"),
}
REPLACED = {"ix_audit_logs_action": "action", "ix_audit_logs_user_id": "user_id"}


def _where(column: str | None) -> dict:
    if column is None:
        return {}
    predicate = sa.text(f"{column} IS NOT NULL")
    return {"postgresql_where": predicate, "sqlite_where": predicate}


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    concurrently = {"postgresql_concurrently": True} if postgres else {}
    with op.get_context().autocommit_block():
        for name, (columns, column) in INDEXES.items():
            op.create_index(name, "audit_logs", columns, **_where(column), **concurrently)
        for name in REPLACED:
            op.drop_index(name, table_name="audit_logs", **concurrently)


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    concurrently = {"postgresql_concurrently": True} if postgres else {}
    with op.get_context().autocommit_block():
        for name, column in REPLACED.items():
            op.create_index(name, "audit_logs", [column], **concurrently)
        for name in INDEXES:
            op.drop_index(name, table_name="audit_logs", **concurrently)
