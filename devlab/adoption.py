"""Adopting the FastAPI DevLab's database: `flask db upgrade` takes its tables over in place.

The FastAPI version that DevLab replaces made its tables with SQLAlchemy's `create_all()`: `users`,
`notes` and `audit_logs`, under DevLab's names, but with no `alembic_version`, VARCHARs without
lengths, naive timestamps (UTC), case-sensitive unique indexes named by SQLAlchemy's defaults,
nullable columns that DevLab requires, and no foreign key `ON DELETE` rules
(`../shared/legacy/fastapi-devlab-schema.sql` is one).

An upgrade that would build revision 0001 from nothing, on a database holding those three tables
(migrations/env.py hands its steps to `adopting_fastapi_tables`), brings them to exactly what
0001 builds instead: the same types, NOT NULLs, server defaults, constraint and index names, the
case-insensitive unique indexes and the foreign keys' rules. Naive timestamps are read as UTC,
whatever the server's time zone; a NULL note text becomes ''; a note's new `updated_at` is its
`created_at`. Rows, their ids and the id sequences stay as they are. The upgrade then goes on
from 0001 as on any DevLab database, and Alembic runs all of it in one transaction: when any
step fails, the database is left as it was.

Before it changes anything, it looks for what it cannot carry over without deciding for the
owner: accounts whose usernames or email addresses differ only in case (DevLab's are unique in
any case), values longer than DevLab's columns, rows without a value DevLab requires (a note
without an owner, a row without `created_at`). Then it stops, names the rows and says how to
resolve them. It never merges, drops or rewrites an account itself.

This is revision 0001 in another form, and like a revision it must not follow later changes to
the models: the revisions after 0001 run after it.
"""

import logging
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from alembic.util import CommandError
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

ADOPTED_REVISION = "0001"

LEGACY_COLUMNS = {
    "users": {"id", "username", "email", "hashed_password", "created_at", "is_admin"},
    "notes": {"id", "text", "created_at", "owner_id"},
    "audit_logs": {"id", "action", "detail", "ip", "user_id", "created_at"},
}
# Revision 0001's lengths, which a legacy value must fit.
MAX_LENGTHS = [
    ("users", "username", 32),
    ("users", "email", 254),
    ("users", "hashed_password", 255),
    ("audit_logs", "action", 64),
    ("audit_logs", "ip", 45),
]
# Columns that revision 0001 makes NOT NULL and that the FastAPI version may have left empty.
# A NULL note text is not among them: it becomes ''.
REQUIRED = [
    ("users", "username"),
    ("users", "email"),
    ("users", "hashed_password"),
    ("users", "is_admin"),
    ("users", "created_at"),
    ("notes", "owner_id"),
    ("notes", "created_at"),
    ("audit_logs", "action"),
    ("audit_logs", "created_at"),
]
IDS_SHOWN = 20
RESOLVE = (
    "Resolve each of these, then run `flask db upgrade` again. DevLab never merges, deletes or "
    "renames an account itself: if two accounts are one person's, keep what you want of both "
    "in one and delete the other yourself."
)

log = logging.getLogger(__name__)


def adopting_fastapi_tables(work: Callable) -> Callable:
    """Wrap an Alembic command's work function (`fn`): an upgrade that starts by building
    revision 0001 on a database that holds the FastAPI version's tables adopts them instead.

    Every other command (stamp, current, downgrade, check) and every other database passes
    through untouched.
    """

    def steps(heads: tuple[str, ...], migration_context) -> Iterable:
        planned = list(work(heads, migration_context))
        if heads or not planned or not _builds_first_revision(planned[0]):
            return planned
        connection = migration_context.connection
        found = sorted(name for name in LEGACY_COLUMNS if sa.inspect(connection).has_table(name))
        if not found:
            return planned
        adopt(connection, found)
        if len(planned) == 1:  # `flask db upgrade 0001`: nothing left to record the revision
            migration_context.stamp(migration_context.script, ADOPTED_REVISION)
        # Alembic records the next step's revision as the database's, 0001 not being recorded.
        return planned[1:]

    return steps


def _builds_first_revision(step) -> bool:
    info = step.info
    return info.is_upgrade and not info.is_stamp and info.up_revision_id == ADOPTED_REVISION


def adopt(connection: Connection, found: list[str]) -> None:
    """Bring the FastAPI version's tables to revision 0001, or raise CommandError having
    changed nothing."""
    if connection.dialect.name != "postgresql":
        raise CommandError(
            f"This database holds {', '.join(found)} but no alembic_version: it looks like the "
            "FastAPI DevLab's, which DevLab adopts on PostgreSQL only."
        )
    if len(found) < len(LEGACY_COLUMNS):
        missing = sorted(set(LEGACY_COLUMNS) - set(found))
        raise CommandError(
            f"This database holds {', '.join(found)} but not {', '.join(missing)}, and no "
            "alembic_version: it is neither a DevLab database nor the FastAPI DevLab's, and "
            "nothing was changed. Migrate it into an empty database instead."
        )
    # Whatever else still writes to these tables waits until the upgrade commits, so that the
    # checks below see the rows the changes apply to.
    connection.execute(text("LOCK TABLE users, notes, audit_logs IN ACCESS EXCLUSIVE MODE"))
    types = _column_types(connection)
    problems = _shape_problems(types) or _row_problems(connection)
    if problems:
        raise CommandError(
            "This database looks like the FastAPI DevLab's (users, notes and audit_logs without "
            "alembic_version), but DevLab cannot adopt it as it is, and changed nothing.\n\n"
            + "\n\n".join([*problems, RESOLVE])
        )
    counts = (
        f"{name} ({connection.scalar(select(func.count()).select_from(sa.table(name)))} rows)"
        for name in LEGACY_COLUMNS
    )
    log.info(
        "Adopting the FastAPI DevLab's tables as revision %s: %s",
        ADOPTED_REVISION,
        ", ".join(counts),
    )
    try:
        _bring_to_revision_0001(connection, types)
    except DBAPIError as error:
        raise CommandError(
            "Adopting the FastAPI DevLab's tables failed, and nothing was changed: "
            f"{str(error.orig).strip()}"
        ) from error


def _column_types(connection: Connection) -> dict[tuple[str, str], str]:
    rows = connection.execute(
        text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name IN ('users', 'notes', "
            "'audit_logs')"
        )
    )
    return {(table, column): data_type for table, column, data_type in rows}


def _shape_problems(types: dict[tuple[str, str], str]) -> list[str]:
    problems = []
    for name, expected in LEGACY_COLUMNS.items():
        present = {column for table, column in types if table == name}
        if present != expected:
            differences = [
                *(f"no column {column}" for column in sorted(expected - present)),
                *(f"a column {column} it did not have" for column in sorted(present - expected)),
            ]
            problems.append(
                f"Table {name} is not as the FastAPI DevLab made it: {', '.join(differences)}. "
                "Bring it back to that version's columns (DevLab adds its own)."
            )
    return problems


def _row_problems(connection: Connection) -> list[str]:
    return [
        *_case_clashes(connection, "username", "usernames", "another-name"),
        *_case_clashes(connection, "email", "email addresses", "another@example.com"),
        *_too_long(connection),
        *_missing_values(connection),
    ]


def _legacy(name: str, *columns: str) -> sa.TableClause:
    return sa.table(name, sa.column("id"), *(sa.column(column) for column in columns))


def _case_clashes(connection: Connection, name: str, what: str, example: str) -> list[str]:
    users = _legacy("users", name)
    folded = func.lower(users.c[name])
    clashing = select(folded).group_by(folded).having(func.count() > 1)
    groups: dict[str, list[tuple[int, str]]] = {}
    for user_id, value, key in connection.execute(
        select(users.c.id, users.c[name], folded).where(folded.in_(clashing)).order_by(users.c.id)
    ):
        groups.setdefault(key, []).append((user_id, value))
    if not groups:
        return []
    # repr() quotes each value and escapes control characters, which a terminal would obey.
    listed = "\n".join(
        "  " + ", ".join(f"id {user_id} {value!r}" for user_id, value in accounts)
        for accounts in groups.values()
    )
    second_id, _ = next(iter(groups.values()))[1]
    fix = f"UPDATE users SET {name} = '{example}' WHERE id = {second_id};"  # noqa: S608 (advice)
    return [
        f"These accounts have {what} that differ only in case, which DevLab takes for the same "
        f"(its {what} are unique in any case):\n{listed}\n"
        f"Decide which account keeps the {name}, give the others another one, for example\n"
        f"  {fix}\nand tell their owners."
    ]


def _too_long(connection: Connection) -> list[str]:
    problems = []
    for name, column_name, limit in MAX_LENGTHS:
        rows = _legacy(name, column_name)
        ids = connection.scalars(
            select(rows.c.id)
            .where(func.char_length(rows.c[column_name]) > limit)
            .order_by(rows.c.id)
        ).all()
        if ids:
            problems.append(
                f"{name}.{column_name} holds more than {limit} characters, DevLab's limit, in "
                f"{_rows(ids)}. Shorten those values."
            )
    return problems


def _missing_values(connection: Connection) -> list[str]:
    problems = []
    for name, column_name in REQUIRED:
        rows = _legacy(name, column_name)
        ids = connection.scalars(
            select(rows.c.id).where(rows.c[column_name].is_(None)).order_by(rows.c.id)
        ).all()
        if ids:
            fix = (
                "give them an owner or delete them"
                if column_name == "owner_id"
                else f"set it (UPDATE {name} SET {column_name} = ... WHERE id IN (...);)"  # noqa: S608
            )
            problems.append(
                f"{name}.{column_name} is empty in {_rows(ids)}, and DevLab requires it: {fix}."
            )
    return problems


def _rows(ids: list[int]) -> str:
    shown = ", ".join(str(row_id) for row_id in ids[:IDS_SHOWN])
    more = f" and {len(ids) - IDS_SHOWN} more" if len(ids) > IDS_SHOWN else ""
    return f"the row{'s' if len(ids) > 1 else ''} with id {shown}{more}"


def _bring_to_revision_0001(connection: Connection, types: dict[tuple[str, str], str]) -> None:
    quote = connection.dialect.identifier_preparer.quote_identifier

    def run(*statements: str) -> None:
        for statement in statements:
            connection.execute(text(statement))

    def timestamp(table: str) -> str:
        """created_at as 0001 has it: UTC instants, now() by default, never NULL."""
        naive = types[(table, "created_at")] == "timestamp without time zone"
        read_as_utc = " USING created_at AT TIME ZONE 'UTC'" if naive else ""
        return (
            f"ALTER COLUMN created_at TYPE timestamp with time zone{read_as_utc}, "
            "ALTER COLUMN created_at SET DEFAULT now(), ALTER COLUMN created_at SET NOT NULL"
        )

    # The old foreign keys, unique and plain indexes go; the primary keys stay, renamed.
    for table in LEGACY_COLUMNS:
        for name, kind in connection.execute(
            text(
                "SELECT conname, contype FROM pg_constraint "
                "WHERE conrelid = CAST(:table AS regclass) ORDER BY contype, conname"
            ),
            {"table": table},
        ).all():
            if kind == "p":
                if name != f"pk_{table}":
                    run(f"ALTER TABLE {table} RENAME CONSTRAINT {quote(name)} TO pk_{table}")
            else:
                run(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
        for (name,) in connection.execute(
            text(
                "SELECT index_class.relname FROM pg_index "
                "JOIN pg_class AS index_class ON index_class.oid = pg_index.indexrelid "
                "WHERE pg_index.indrelid = CAST(:table AS regclass) AND NOT EXISTS "
                "(SELECT FROM pg_constraint WHERE conindid = pg_index.indexrelid)"
            ),
            {"table": table},
        ).all():
            run(f"DROP INDEX {quote(name)}")

    run(
        "ALTER TABLE users "
        "ALTER COLUMN username TYPE varchar(32), ALTER COLUMN username SET NOT NULL, "
        "ALTER COLUMN email TYPE varchar(254), ALTER COLUMN email SET NOT NULL, "
        "ALTER COLUMN hashed_password TYPE varchar(255), "
        "ALTER COLUMN hashed_password SET NOT NULL, "
        "ALTER COLUMN is_admin SET DEFAULT false, ALTER COLUMN is_admin SET NOT NULL, "
        + timestamp("users"),
        "CREATE UNIQUE INDEX ix_users_username_lower ON users (lower(username))",
        "CREATE UNIQUE INDEX ix_users_email_lower ON users (lower(email))",
        "UPDATE notes SET text = '' WHERE text IS NULL",
        "ALTER TABLE notes "
        "ALTER COLUMN owner_id SET NOT NULL, "
        "ALTER COLUMN text TYPE text, ALTER COLUMN text SET NOT NULL, "
        + timestamp("notes")
        + ", ADD COLUMN updated_at timestamp with time zone",
        # Never edited since DevLab knows of them, as far as it can tell.
        "UPDATE notes SET updated_at = created_at",
        "ALTER TABLE notes "
        "ALTER COLUMN updated_at SET DEFAULT now(), ALTER COLUMN updated_at SET NOT NULL, "
        "ADD CONSTRAINT fk_notes_owner_id_users FOREIGN KEY (owner_id) "
        "REFERENCES users (id) ON DELETE CASCADE",
        "CREATE INDEX ix_notes_owner_id_created_at ON notes (owner_id, created_at)",
        "ALTER TABLE audit_logs "
        "ALTER COLUMN action TYPE varchar(64), ALTER COLUMN action SET NOT NULL, "
        "ALTER COLUMN detail TYPE text, "
        "ALTER COLUMN ip TYPE varchar(45), "
        "ADD COLUMN method varchar(16), ADD COLUMN path text, ADD COLUMN status_code integer, "
        + timestamp("audit_logs")
        + ", ADD CONSTRAINT fk_audit_logs_user_id_users FOREIGN KEY (user_id) "
        "REFERENCES users (id) ON DELETE SET NULL",
        "CREATE INDEX ix_audit_logs_action ON audit_logs (action)",
        "CREATE INDEX ix_audit_logs_created_at ON audit_logs (created_at)",
        "CREATE INDEX ix_audit_logs_user_id ON audit_logs (user_id)",
    )
