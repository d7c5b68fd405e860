"""Count every SQL statement an engine's connections execute, at the driver.

SQLAlchemy's own statements and anything beside them (a pool's ping, a SET) are counted; BEGIN
and COMMIT are not: devlab/db_transactions.py sends BEGIN with a transaction's first statement,
and COMMIT with its last or as a statement of its own. Used by
tests/test_statement_counts.py, which holds the budgets, and by `make bench`, which reports them.
"""

import re
from contextlib import contextmanager

import psycopg2.extensions
from sqlalchemy import event

# What devlab/db_transactions.py sends as a statement of its own when no statement carries it:
# COMMIT, ROLLBACK, and BEGIN with its SET LOCALs before an executemany.
TRANSACTION_CONTROL = re.compile(
    r"COMMIT|ROLLBACK|BEGIN( ISOLATION LEVEL [A-Z ]+)?;( SET LOCAL [^;]+;)* ?"
)


@contextmanager
def counting_statements(engine, *, with_transaction_control: bool = False):
    """Yield a list that collects the statements `engine` executes until the block ends: each
    message sent, with `with_transaction_control`, COMMIT and ROLLBACK sent alone included."""
    statements = []
    counting = True

    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            control = not with_transaction_control and TRANSACTION_CONTROL.fullmatch(query)
            if counting and not control:
                statements.append(query)
            return super().execute(query, vars)

    def count_on(dbapi_connection, _record, _proxy):
        dbapi_connection.cursor_factory = CountingCursor

    # A pool's pre-ping runs before the checkout listeners: so the connections waiting in the
    # pool count from now on, and any the request opens from its checkout.
    _set_cursor_factory_of_idle_connections(engine, CountingCursor)
    event.listen(engine, "checkout", count_on, insert=True)
    try:
        yield statements
    finally:
        counting = False
        event.remove(engine, "checkout", count_on)
        _set_cursor_factory_of_idle_connections(engine, psycopg2.extensions.cursor)


def _set_cursor_factory_of_idle_connections(engine, factory) -> None:
    idle = [engine.raw_connection() for _ in range(engine.pool.checkedin())]
    for connection in idle:
        connection.driver_connection.cursor_factory = factory
    for connection in idle:
        connection.close()
