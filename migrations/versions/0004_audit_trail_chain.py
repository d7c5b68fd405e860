"""the audit trail: who did what to whom, append-only, hash-chained

New columns on `audit_logs`: `request_id`, `user_agent`, `target_type`, `target_id`, `changes`
(JSON), and the chain's `prev_hash` and `row_hash`. `user_id` keeps its actor when a user is
deleted (no more ON DELETE SET NULL, which would be an UPDATE of the trail).

On PostgreSQL the database itself keeps the trail:
- `audit_logs_chain` (BEFORE INSERT) serializes appends with a transaction-level advisory lock,
  gives the row the next id (the column has no default: ids are drawn under the lock), and
  fills `prev_hash` and `row_hash` from the encoding fixed in devlab/audit/chain.py
  (`audit_row_canonical` writes the same bytes in SQL), so no writer, the app or psql, can add
  a row outside the chain, with an id or with hashes of its own.
- `audit_logs_append_only` refuses UPDATE and DELETE, and `audit_logs_no_truncate` TRUNCATE,
  for every role, the owner included. DELETE passes only in a transaction that set
  `devlab.audit_purge` to `on` (`SET LOCAL`), which only `flask audit purge` does.
- The rows already there are chained in id order, so an upgraded database verifies.

SQLite gets the columns and the append-only triggers, but no chain: it has no SHA-256 in SQL,
and it is the development default (the README says so).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CANONICAL_JSON = r"""
CREATE FUNCTION audit_json_canonical(value jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    -- Python's json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False):
    -- keys in code point order (the bytes of UTF-8 under COLLATE "C"), no spaces, strings
    -- escaped as both escape them. Numbers are written as jsonb holds them: integers only.
    CASE jsonb_typeof(value)
        WHEN 'object' THEN
            RETURN '{' || coalesce((
                SELECT string_agg(
                    to_json(key)::text || ':' || audit_json_canonical(item),
                    ',' ORDER BY key COLLATE "C"
                )
                FROM jsonb_each(value) AS member(key, item)
            ), '') || '}';
        WHEN 'array' THEN
            RETURN '[' || coalesce((
                SELECT string_agg(audit_json_canonical(item), ',' ORDER BY position)
                FROM jsonb_array_elements(value) WITH ORDINALITY AS element(item, position)
            ), '') || ']';
        ELSE
            RETURN value::text;
    END CASE;
END
$$
"""

# PL/pgSQL, not SQL: a SQL function taking a row is not inlined, and was 20 times slower here
# (97 against 5 microseconds a row, with the hash).
CANONICAL_ROW = r"""
CREATE FUNCTION audit_row_canonical(r audit_logs) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN '{"action":' || coalesce(to_json(r.action)::text, 'null')
        || ',"changes":' || coalesce(audit_json_canonical(r.changes), 'null')
        || ',"created_at":' || coalesce(to_json(to_char(r.created_at AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))::text, 'null')
        || ',"detail":' || coalesce(to_json(r.detail)::text, 'null')
        || ',"id":' || coalesce(r.id::text, 'null')
        || ',"ip":' || coalesce(to_json(r.ip)::text, 'null')
        || ',"method":' || coalesce(to_json(r.method)::text, 'null')
        || ',"path":' || coalesce(to_json(r.path)::text, 'null')
        || ',"request_id":' || coalesce(to_json(r.request_id)::text, 'null')
        || ',"status_code":' || coalesce(r.status_code::text, 'null')
        || ',"target_id":' || coalesce(to_json(r.target_id)::text, 'null')
        || ',"target_type":' || coalesce(to_json(r.target_type)::text, 'null')
        || ',"user_agent":' || coalesce(to_json(r.user_agent)::text, 'null')
        || ',"user_id":' || coalesce(r.user_id::text, 'null')
        || '}';
END
$$
"""

ROW_HASH = r"""
CREATE FUNCTION audit_row_hash(prev_hash text, r audit_logs) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN encode(sha256(convert_to(prev_hash || E'\n' || audit_row_canonical(r), 'UTF8')), 'hex');
END
$$
"""

# 7262836001: the key of the advisory lock that serializes appends to the chain.
CHAIN_TRIGGER = r"""
CREATE FUNCTION audit_logs_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    head_id integer;
    head_hash text;
BEGIN
    -- The foreign key's lock on the actor first, which the key's own check would otherwise
    -- take after the chain's lock: a login holds its user's row (FOR UPDATE) and then takes
    -- the chain's lock, so taking them the other way round here would deadlock with it.
    IF NEW.user_id IS NOT NULL THEN
        PERFORM 1 FROM users WHERE id = NEW.user_id FOR KEY SHARE;
    END IF;
    -- Held until the transaction ends: the next writer reads this row as its head only
    -- once it is committed, so concurrent writers never fork the chain.
    PERFORM pg_advisory_xact_lock(7262836001);
    SELECT id, row_hash INTO head_id, head_hash FROM audit_logs ORDER BY id DESC LIMIT 1;
    -- The chain's order is the ids' order: every id is drawn here, under the lock (the
    -- column has no default), and an id a writer chose is ignored. Should the sequence have
    -- been set back below the head, it moves past it.
    NEW.id := nextval(pg_get_serial_sequence('audit_logs', 'id'));
    IF NEW.id <= head_id THEN
        PERFORM setval(pg_get_serial_sequence('audit_logs', 'id'), head_id);
        NEW.id := nextval(pg_get_serial_sequence('audit_logs', 'id'));
    END IF;
    NEW.prev_hash := coalesce(head_hash, repeat('0', 64));
    NEW.row_hash := audit_row_hash(NEW.prev_hash, NEW);
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_logs_chain BEFORE INSERT ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_chain();
"""

APPEND_ONLY_TRIGGERS = r"""
CREATE FUNCTION audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('devlab.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Rows leave the audit trail only through `flask audit purge`.';
END
$$;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();
"""

# Existing rows, oldest first, each after the one before it (triggers not installed yet).
CHAIN_EXISTING_ROWS = r"""
DO $$
DECLARE
    r audit_logs;
    previous text := repeat('0', 64);
BEGIN
    FOR r IN SELECT * FROM audit_logs ORDER BY id LOOP
        r.row_hash := audit_row_hash(previous, r);
        UPDATE audit_logs SET prev_hash = previous, row_hash = r.row_hash WHERE id = r.id;
        previous := r.row_hash;
    END LOOP;
END
$$
"""

SQLITE_APPEND_ONLY_TRIGGERS = [
    f"""
    CREATE TRIGGER audit_logs_append_only_{operation.lower()}
    BEFORE {operation} ON audit_logs
    BEGIN
        SELECT RAISE(ABORT, 'audit_logs is append-only: {operation} is not allowed');
    END
    """
    for operation in ("UPDATE", "DELETE")
]

NEW_COLUMNS = [
    ("request_id", sa.String(length=128)),
    ("user_agent", sa.String(length=256)),
    ("target_type", sa.String(length=16)),
    ("target_id", sa.Text()),
    ("changes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    ("prev_hash", sa.String(length=64)),
    ("row_hash", sa.String(length=64)),
]


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    # Plain ADD COLUMNs: nullable, so no table rewrite on PostgreSQL and no batch copy on SQLite.
    for name, type_ in NEW_COLUMNS:
        op.add_column("audit_logs", sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("audit_logs") as batch:
        batch.drop_constraint("fk_audit_logs_user_id_users", type_="foreignkey")
        batch.create_foreign_key("fk_audit_logs_user_id_users", "users", ["user_id"], ["id"])
    if not postgres:
        for statement in SQLITE_APPEND_ONLY_TRIGGERS:
            op.execute(statement)
        return
    for statement in (CANONICAL_JSON, CANONICAL_ROW, ROW_HASH, CHAIN_EXISTING_ROWS):
        op.execute(statement)
    # Ids are drawn by the chain's trigger alone, under its lock, so that they follow the chain.
    op.execute("ALTER TABLE audit_logs ALTER COLUMN id DROP DEFAULT")
    op.execute(CHAIN_TRIGGER)
    op.execute(APPEND_ONLY_TRIGGERS)


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER audit_logs_no_truncate ON audit_logs")
        op.execute("DROP TRIGGER audit_logs_append_only ON audit_logs")
        op.execute("DROP TRIGGER audit_logs_chain ON audit_logs")
        op.execute("DROP FUNCTION audit_logs_append_only()")
        op.execute("DROP FUNCTION audit_logs_chain()")
        op.execute("DROP FUNCTION audit_row_hash(text, audit_logs)")
        op.execute("DROP FUNCTION audit_row_canonical(audit_logs)")
        op.execute("DROP FUNCTION audit_json_canonical(jsonb)")
        op.execute(
            "ALTER TABLE audit_logs ALTER COLUMN id "
            "SET DEFAULT nextval(pg_get_serial_sequence('audit_logs', 'id')::regclass)"
        )
    else:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER audit_logs_append_only_{operation}")
    with op.batch_alter_table("audit_logs") as batch:
        batch.drop_constraint("fk_audit_logs_user_id_users", type_="foreignkey")
        batch.create_foreign_key(
            "fk_audit_logs_user_id_users", "users", ["user_id"], ["id"], ondelete="SET NULL"
        )
    for name, _type in reversed(NEW_COLUMNS):
        op.drop_column("audit_logs", name)
