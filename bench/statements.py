"""Count every SQL statement an engine's connections execute, at the driver.

SQLAlchemy's own statements and anything beside them (a pool's ping, a SET) are counted; BEGIN
and COMMIT are not (psycopg2 sends BEGIN itself, and COMMIT is a call of its own). Used by
tests/test_statement_counts.py, which holds the budgets, and by `make bench`, which reports them.
"""

from contextlib import contextmanager

import psycopg2.extensions
from sqlalchemy import event


@contextmanager
def counting_statements(engine):
    """Yield a list that collects the statements `engine` executes until the block ends."""
    statements = []
    counting = True

    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            if counting:
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
