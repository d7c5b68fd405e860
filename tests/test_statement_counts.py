"""How many SQL statements each hot request sends: a fixed budget, asserted here, not timed.

Every statement a request's connection executes is counted, at the driver (bench/statements.py).
One warm-up request comes first, so that the pool holds a live connection. BEGIN and COMMIT are
not counted, so "3 plus the commit" is a budget of 3.
"""

import pytest

from bench.statements import counting_statements
from devlab.extensions import db


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
    with app.app_context():
        engine = db.engine
    with counting_statements(engine) as statements:
        response = getattr(client, method)(path, json=body, headers=alice)

    assert response.status_code in (200, 201)
    assert statements, "nothing was counted: the counter is broken"
    assert len(statements) <= budget, "\n".join(statements)


def test_a_page_past_the_last_still_reports_the_total(client, alice):
    body = client.get("/notes?page=9&page_size=10", headers=alice).get_json()

    assert (body["notes"], body["total"], body["pages"]) == ([], 25, 3)
