"""GET /admin/users filters: q (a prefix of the username or email, any case), is_admin,
is_active; alone, combined, paged, refused when odd, and served by the prefix indexes."""

import re

import pytest
from sqlalchemy import event, text

from devlab.extensions import db
from tests.conftest import PASSWORD


def sign_up(client, username: str, email: str | None = None) -> dict:
    account = {"username": username, "email": email or f"{username}@example.com"}
    response = client.post("/signup", json=account | {"password": PASSWORD})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def listed(client, headers: dict, query: str) -> dict:
    response = client.get(f"/admin/users?{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def names(body: dict) -> list[str]:
    return [user["username"] for user in body["users"]]


@pytest.fixture
def root(accounts):
    return accounts.admin_headers("root")


@pytest.fixture
def people(client, root):
    """root (admin), Alice, alan (admin), albert (inactive), bob (email alpha@...), carol."""
    ids = {
        "Alice": sign_up(client, "Alice")["id"],
        "alan": sign_up(client, "alan")["id"],
        "albert": sign_up(client, "albert")["id"],
        "bob": sign_up(client, "bob", "Alpha.Bob@example.com")["id"],
        "carol": sign_up(client, "carol", "carol@al.example.com")["id"],
    }
    assert client.post(f"/admin/promote/{ids['alan']}", headers=root).status_code == 200
    deactivated = client.post(f"/admin/users/{ids['albert']}/deactivate", headers=root)
    assert deactivated.status_code == 200
    return ids


# --- each filter, and their combinations -------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=al", ["Alice", "alan", "albert", "bob"]),  # bob by his email alpha.bob@
        ("q=AL", ["Alice", "alan", "albert", "bob"]),
        ("q=aLi", ["Alice"]),
        ("q=alpha.B", ["bob"]),
        ("q=carol@al", ["carol"]),
        ("q=lice", []),  # a prefix, not any part
        ("q=example.com", []),
        ("is_admin=true", ["root", "alan"]),
        ("is_admin=false", ["Alice", "albert", "bob", "carol"]),
        ("is_active=false", ["albert"]),
        ("is_active=true", ["root", "Alice", "alan", "bob", "carol"]),
        ("q=al&is_admin=false", ["Alice", "albert", "bob"]),
        ("q=al&is_active=true", ["Alice", "alan", "bob"]),
        ("is_admin=false&is_active=true", ["Alice", "bob", "carol"]),
        ("q=al&is_admin=false&is_active=true", ["Alice", "bob"]),
        ("q=al&is_admin=true&is_active=false", []),
    ],
)
def test_the_filters_narrow_the_list_alone_and_together(client, root, people, query, expected):
    body = listed(client, root, query)

    assert names(body) == expected
    assert (body["total"], body["page"], body["page_size"]) == (len(expected), 1, 20)
    assert body["pages"] == (1 if expected else 0)


def test_no_filter_still_lists_everyone(client, root, people):
    assert names(listed(client, root, "")) == ["root", "Alice", "alan", "albert", "bob", "carol"]


def test_the_page_metadata_counts_what_the_filters_leave(client, root):
    for n in range(7):
        sign_up(client, f"match{n}")
        sign_up(client, f"other{n}")

    body = listed(client, root, "q=MATCH&page=3&page_size=3")
    past = listed(client, root, "q=match&page=9&page_size=3")

    assert names(body) == ["match6"]
    assert (body["total"], body["page"], body["page_size"], body["pages"]) == (7, 3, 3, 3)
    assert (past["users"], past["total"], past["pages"]) == ([], 7, 3)


# --- q matches literally -----------------------------------------------------------------------


@pytest.fixture
def lookalikes(client, root):
    sign_up(client, "abc")
    sign_up(client, "a_b")
    sign_up(client, "zed", "a_%z@example.com")
    sign_up(client, "pct", "a%b@example.com")


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("a_%", ["zed"]),  # as LIKE patterns, _ and % would match "abc" and "a_b" too
        ("a_", ["a_b", "zed"]),
        ("a%", ["pct"]),
        ("_", []),
        ("%", []),
        ("\\", []),  # a lone escape character would make PostgreSQL reject the pattern
        ("a\\_", []),
        ("a_%z@example.com", ["zed"]),
    ],
)
def test_percent_underscore_and_backslash_in_q_match_only_themselves(
    client, root, lookalikes, q, expected
):
    response = client.get("/admin/users", query_string={"q": q}, headers=root)

    assert response.status_code == 200, response.get_json()
    assert names(response.get_json()) == expected


def test_a_non_ascii_q_matches_by_prefix_in_any_case(app, client, root):
    sign_up(client, "elodie")  # ASCII: no é to match
    with app.app_context():  # an address the FastAPI version took, before ASCII was required
        db.session.execute(
            text(
                "INSERT INTO users (username, email, hashed_password) "
                "VALUES ('legacy', 'Élodie@example.com', 'x')"
            )
        )
        db.session.commit()

    for q in ("é", "É", "élo", "ÉLODIE@"):
        response = client.get("/admin/users", query_string={"q": q}, headers=root)
        assert response.status_code == 200, response.get_json()
        assert names(response.get_json()) == ["legacy"], q
    for q in ("ü", "日本", "e\u0301"):  # e and a combining accent is another text than é
        response = client.get("/admin/users", query_string={"q": q}, headers=root)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["total"] == 0, q


# --- who may filter, and odd input ---------------------------------------------------------------


@pytest.mark.parametrize("query", ["q=a", "is_admin=true", "is_active=false&q=root"])
def test_a_normal_user_may_not_filter_users(client, accounts, root, query):
    headers = accounts.headers("alice")

    response = client.get(f"/admin/users?{query}", headers=headers)

    assert response.status_code == 403
    assert response.get_json()["code"] == 403
    assert client.get(f"/admin/users?{query}").status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("q=", "q"),
        ("q=" + "a" * 255, "q"),
        ("q=%00", "q"),
        ("q=a&q=b", "q"),
        ("is_admin=yes", "is_admin"),
        ("is_admin=1", "is_admin"),
        ("is_admin=True", "is_admin"),
        ("is_admin=", "is_admin"),
        ("is_active=maybe", "is_active"),
        ("is_active=true&is_active=false", "is_active"),
        ("search=al", "search"),
    ],
)
def test_odd_filters_answer_422_naming_the_parameter(client, root, query, field):
    response = client.get(f"/admin/users?{query}", headers=root)

    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422
    assert field in body["errors"]["query"]


def test_the_longest_q_is_taken(client, root):
    sign_up(client, "longmail", f"{'l' * 64}@{'d' * 60}.example.com")

    response = client.get("/admin/users", query_string={"q": "L" * 64 + "@"}, headers=root)

    assert response.status_code == 200
    assert names(response.get_json()) == ["longmail"]
    assert client.get(f"/admin/users?q={'a' * 254}", headers=root).status_code == 200


def test_the_filters_are_documented(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/admin/users"]["get"]

    parameters = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
    assert parameters["q"]["type"] == "string"
    assert (parameters["q"]["minLength"], parameters["q"]["maxLength"]) == (1, 254)
    assert parameters["is_admin"]["type"] == parameters["is_active"]["type"] == "boolean"
    assert {"page", "page_size"} <= set(parameters)
    assert {"200", "401", "403", "422"} <= set(operation["responses"])


# --- the prefix indexes serve q ------------------------------------------------------------------


def test_q_is_served_by_the_prefix_indexes_without_a_seq_scan(app, client, root):
    """20,000 users seeded by SQL, then the statements the request sent, explained."""
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO users (username, email, hashed_password) "
                "SELECT 'u' || left(md5(n::text), 20), "
                "'m' || n || '@' || left(md5(n::text), 12) || '.example.com', 'x' "
                "FROM generate_series(1, 20000) AS n"
            )
        )
        db.session.execute(text("ANALYZE users"))
        db.session.commit()
        expected = db.session.scalar(
            text("SELECT count(*) FROM users WHERE username LIKE 'ua1%' OR email LIKE 'ua1%'")
        )
        engine = db.engine
    sent = []

    def keep(_conn, _cursor, statement, parameters, _context, _executemany):
        if "LIKE" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        body = listed(client, root, "q=UA1&page_size=100")
    finally:
        event.remove(engine, "before_cursor_execute", keep)

    assert 0 < expected == body["total"]
    assert all(name.startswith("ua1") for name in names(body))
    assert len(sent) == 2  # the page, and its count
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        for statement, parameters in sent:
            # Without the request's SET LOCALs, which travel in the same message
            query = re.sub(r"^(?:SET LOCAL [^;]+; )+", "", statement)
            cursor.execute("EXPLAIN " + query, parameters)
            plan = "\n".join(line for (line,) in cursor.fetchall())
            assert "ix_users_username_prefix" in plan, plan
            assert "ix_users_email_prefix" in plan, plan
            assert "Seq Scan" not in plan, plan
