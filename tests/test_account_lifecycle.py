"""Demotion, deactivation and activation, and the guard that keeps one admin in charge."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from devlab.extensions import db
from devlab.models import User
from tests.conftest import PASSWORD, without_request_id
from tests.locks import holding_lock, wait_for_lock_waiters


def user_id(app, username: str) -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.username == username))


def roles(app) -> dict:
    with app.app_context():
        rows = db.session.execute(select(User.username, User.is_admin, User.is_active))
        return {name: (is_admin, is_active) for name, is_admin, is_active in rows}


ACTIONS = {
    "demote": ("/admin/demote/{id}", "user_demoted", "demoted"),
    "deactivate": ("/admin/users/{id}/deactivate", "user_deactivated", "deactivated"),
    "activate": ("/admin/users/{id}/activate", "user_activated", "activated"),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_lifecycle_routes_need_an_admin(client, accounts, action):
    headers = accounts.headers("alice")
    path = ACTIONS[action][0].format(id=1)

    assert client.post(path).status_code == 401
    assert client.post(path, headers=headers).status_code == 403


@pytest.mark.parametrize("action", ACTIONS)
def test_lifecycle_routes_answer_404_for_an_unknown_user(client, accounts, action):
    headers = accounts.admin_headers("root")

    response = client.post(ACTIONS[action][0].format(id=999), headers=headers)

    assert response.status_code == 404
    assert response.get_json()["message"] == "Not found."


def test_a_demoted_admin_gets_403_at_once_with_the_token_it_holds(app, client, accounts):
    root = accounts.admin_headers("root")
    other = accounts.admin_headers("other")
    assert client.get("/admin/users", headers=other).status_code == 200

    response = client.post(f"/admin/demote/{user_id(app, 'other')}", headers=root)

    assert response.status_code == 200
    assert response.get_json()["is_admin"] is False
    assert client.get("/admin/users", headers=other).status_code == 403
    assert client.get("/me", headers=other).status_code == 200


def test_a_deactivated_user_is_locked_out_at_once(app, client, accounts, audit_rows):
    root = accounts.admin_headers("root")
    alice = accounts.headers("alice")

    response = client.post(f"/admin/users/{user_id(app, 'alice')}/deactivate", headers=root)

    assert response.status_code == 200
    assert response.get_json()["is_active"] is False
    assert client.get("/me", headers=alice).status_code == 401
    wrong = client.post("/login", json={"username": "alice", "password": "wrong password"})
    right = client.post("/login", json={"username": "alice", "password": PASSWORD})
    assert right.status_code == wrong.status_code == 401
    assert without_request_id(right) == without_request_id(wrong)
    assert "deactivated" in audit_rows("login_failed")[-1].detail


def test_an_activated_user_logs_in_again_but_old_tokens_stay_revoked(app, client, accounts):
    root = accounts.admin_headers("root")
    alice = accounts.headers("alice")
    alice_id = user_id(app, "alice")
    client.post(f"/admin/users/{alice_id}/deactivate", headers=root)

    response = client.post(f"/admin/users/{alice_id}/activate", headers=root)

    assert response.status_code == 200
    assert response.get_json()["is_active"] is True
    assert client.get("/me", headers=alice).status_code == 401
    assert (
        client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    )


@pytest.mark.parametrize("action", ACTIONS)
def test_lifecycle_actions_are_idempotent_and_audited(app, client, accounts, audit_rows, action):
    root = accounts.admin_headers("root")
    accounts.signup("alice")
    path, audit_action, _ = ACTIONS[action]
    path = path.format(id=user_id(app, "alice"))

    first = client.post(path, headers=root)
    second = client.post(path, headers=root)

    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()
    rows = audit_rows(audit_action)
    assert len(rows) == 2
    assert all(row.user_id == user_id(app, "root") for row in rows)
    named = f"{ACTIONS[action][2]} user {user_id(app, 'alice')}"  # by id only
    assert [row.detail.partition(" (already ")[0] for row in rows] == [named, named]
    assert "(already " in rows[1].detail


@pytest.mark.parametrize("action", ["demote", "deactivate"])
def test_the_last_active_admin_cannot_be_removed(app, client, accounts, action):
    root = accounts.admin_headers("root")

    response = client.post(ACTIONS[action][0].format(id=user_id(app, "root")), headers=root)

    assert response.status_code == 409
    assert "last active admin" in response.get_json()["message"]
    assert roles(app)["root"] == (True, True)


def test_an_inactive_admin_does_not_count_as_another_admin(app, client, accounts):
    root = accounts.admin_headers("root")
    accounts.admin_headers("dormant")
    client.post(f"/admin/users/{user_id(app, 'dormant')}/deactivate", headers=root)

    response = client.post(f"/admin/demote/{user_id(app, 'root')}", headers=root)

    assert response.status_code == 409


def test_an_admin_may_step_down_while_another_remains(app, client, accounts):
    root = accounts.admin_headers("root")
    accounts.admin_headers("other")

    response = client.post(f"/admin/demote/{user_id(app, 'root')}", headers=root)

    assert response.status_code == 200
    assert roles(app)["other"] == (True, True)


@pytest.mark.parametrize("action", ["demote", "deactivate"])
@pytest.mark.parametrize(
    ("targets", "loser_status"),
    [
        ({"ann": "bob", "bob": "ann"}, 403),  # the loser is no longer an admin when it acts
        ({"ann": "ann", "bob": "bob"}, 409),  # the loser would remove the last admin
    ],
    ids=["each-other", "themselves"],
)
def test_two_admins_acting_at_once_leave_one_admin(app, accounts, action, targets, loser_status):
    """Both requests pass the admin check, then queue on the admin rows' lock, as in a race."""
    headers = {"ann": accounts.admin_headers("ann"), "bob": accounts.admin_headers("bob")}
    path = ACTIONS[action][0]

    def act(actor):
        target = user_id(app, targets[actor])
        return app.test_client().post(path.format(id=target), headers=headers[actor]).status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        with holding_lock(app, "SELECT id FROM users WHERE is_admin FOR UPDATE"):
            results = [pool.submit(act, actor) for actor in headers]
            waiting = wait_for_lock_waiters(app, expected=2)
        statuses = sorted(result.result(timeout=30) for result in results)

    assert waiting == 2
    assert statuses == [200, loser_status]
    remaining = [name for name, (admin, active) in roles(app).items() if admin and active]
    assert len(remaining) == 1


# What a write of an admin's holds on the admin's row meanwhile: a foreign key check (a note, a
# reset link, a token family) or the audit trail's trigger, on the actor (migration 0004).
KEY_SHARE_ON_ROOT = "SELECT id FROM users WHERE username = 'root' FOR KEY SHARE"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/admin/promote/{bob}", 200),
        ("/admin/users/{bob}/deactivate", 200),
        ("/admin/users/{bob}/activate", 200),
        ("/admin/users/{bob}/password-reset", 202),
    ],
)
def test_a_role_change_does_not_wait_for_an_admins_writes_in_flight(
    app, client, accounts, path, status
):
    """The admins' lock (auth/access.py) is FOR NO KEY UPDATE. As FOR UPDATE it waited for
    the key share locks of an admin's writes in flight, while such a write (an admin's reset
    link for another admin) could wait for an admin's row it held: the two ran into each
    other, and the change answered 503 after the lock timeout."""
    root = accounts.admin_headers("root")
    bob = accounts.signup("bob")

    with holding_lock(app, KEY_SHARE_ON_ROOT):
        response = client.post(path.format(bob=bob["id"]), headers=root)

    assert response.status_code == status, response.get_json()
