"""How many SQL statements each hot request sends: a fixed budget, asserted here, not timed.

Every statement a request's connection executes is counted, at the driver: SQLAlchemy's own
and anything beside it (a pool's ping, a SET). One warm-up request comes first, so that the
pool holds a live connection. BEGIN and COMMIT are not counted (psycopg2 sends BEGIN itself,
COMMIT is a call of its own), so "3 plus the commit" is a budget of 3.
"""

from contextlib import contextmanager

import psycopg2.extensions
import pytest
from sqlalchemy import event

from devlab.extensions import db


@contextmanager
def counting_statements(app):
    statements = []
    counting = True

    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            if counting:
                statements.append(query)
            return super().execute(query, vars)

    def count_on(dbapi_connection, _record, _proxy):
        dbapi_connection.cursor_factory = CountingCursor

    with app.app_context():
        engine = db.engine
    # The pool's pre-ping, if any, runs before the checkout listeners: so the connections
    # waiting in the pool count from now on, and any the request opens from its checkout.
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


@pytest.fixture
def alice(client, accounts):
    headers = accounts.headers("alice")
    for n in range(25):  # more than a page
        client.post("/notes", json={"text": f"note {n}"}, headers=headers)
    client.get("/me", headers=headers)  # warm up: the pool holds a live connection
    return headers


@pytest.mark.parametrize(
    ("method", "path", "body", "budget"),
    [
        ("get", "/notes", None, 2),  # the token's family with its user; the page with its count
        ("get", "/notes?page=2&page_size=10", None, 2),
        ("get", "/me", None, 1),  # the token's family with its user
        ("post", "/notes", {"text": "one more"}, 3),  # + the note and its audit row
    ],
)
def test_hot_requests_stay_within_their_statement_budget(
    app, client, alice, method, path, body, budget
):
    with counting_statements(app) as statements:
        response = getattr(client, method)(path, json=body, headers=alice)

    assert response.status_code in (200, 201)
    assert statements, "nothing was counted: the counter is broken"
    assert len(statements) <= budget, "\n".join(statements)


def test_a_page_past_the_last_still_reports_the_total(client, alice):
    body = client.get("/notes?page=9&page_size=10", headers=alice).get_json()

    assert (body["notes"], body["total"], body["pages"]) == ([], 25, 3)
