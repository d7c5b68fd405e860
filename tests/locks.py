"""Races made deterministic: hold a row lock, let requests queue behind it, then let go.

A test that merely fires requests at the same moment usually passes whether or not the code
locks; holding the lock from a second connection makes the requests really overlap.
"""

import time
from contextlib import contextmanager

from sqlalchemy import text

from devlab.extensions import db


def _engine(app):
    # Only the engine is taken from an app context; requests made meanwhile get their own.
    with app.app_context():
        return db.engine


@contextmanager
def holding_lock(app, select_for_update: str, **params):
    """Run `select_for_update` in a transaction of its own; yield its connection.

    Whatever the test executes on the connection commits when the block ends, releasing the
    lock; an error rolls it back.
    """
    with _engine(app).connect() as holder:
        transaction = holder.begin()
        holder.execute(text(select_for_update), params)
        try:
            yield holder
        except BaseException:
            transaction.rollback()
            raise
        transaction.commit()


def wait_for_lock_waiters(app, expected: int) -> int:
    """Wait (at most 10 s) until `expected` sessions wait for a lock; return how many do."""
    waiting = 0
    engine = _engine(app)
    for _ in range(200):
        # A fresh transaction each time: pg_stat_activity is a snapshot within one.
        with engine.connect() as probe:
            waiting = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar()
        if waiting >= expected:
            break
        time.sleep(0.05)
    return waiting
