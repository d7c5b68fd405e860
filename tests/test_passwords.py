"""Password storage: argon2id at the configured costs, bcrypt and pbkdf2_sha256 accounts from the
earlier service, hashes upgraded on login, and failed logins that cost the same whether or not the
user exists."""

import base64
import hashlib
import os

import bcrypt
import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from sqlalchemy import text

from config import OWASP_ARGON2ID_MINIMUMS, ConfigError
from devlab import create_app, passwords
from devlab.extensions import db
from tests.conftest import PASSWORD, TEST_SETTINGS

STRONG_SECRET = "k3Vq9-random-and-long-enough-for-production-use"
CONFIGURED_PREFIX = "$argon2id$v=19$m=8,t=1,p=1$"  # TEST_SETTINGS' costs


def login(client, username, password):
    return client.post("/login", json={"username": username, "password": password})


def insert_user(app, username: str, hashed_password: str) -> None:
    """Add a user row as the earlier FastAPI service wrote it, with its hash as it is."""
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO users (username, email, hashed_password, is_admin) "
                "VALUES (:username, :email, :hashed, false)"
            ),
            {"username": username, "email": f"{username}@example.com", "hashed": hashed_password},
        )
        db.session.commit()


def stored_hash(app, username: str) -> str:
    with app.app_context():
        return db.session.execute(
            text("SELECT hashed_password FROM users WHERE username = :username"),
            {"username": username},
        ).scalar_one()


def bcrypt_hash(password: str, prefix: str = "$2b$") -> str:
    """A hash as passlib's bcrypt wrote it (cost 4 keeps the test fast); $2y$ is $2b$ renamed."""
    made = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=b"2b")).decode()
    return prefix + made.removeprefix("$2b$")


def pbkdf2_sha256_hash(password: str, rounds: int = 1000) -> str:
    """A hash in passlib's pbkdf2_sha256 format, made with hashlib alone, so that the format is
    checked against its documentation rather than against the library that reads it: salt and
    checksum in adapted base64, '.' for '+' and no padding."""
    salt = os.urandom(16)
    checksum = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)

    def adapted_base64(raw: bytes) -> str:
        return base64.b64encode(raw).decode().rstrip("=").replace("+", ".")

    return f"$pbkdf2-sha256${rounds}${adapted_base64(salt)}${adapted_base64(checksum)}"


@pytest.fixture
def argon2_verifications(monkeypatch):
    """The parameters of every argon2 verification the app runs, in order."""
    seen = []
    verify = PasswordHasher.verify

    def recording_verify(self, hash, password):
        seen.append(extract_parameters(hash))
        return verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", recording_verify)
    return seen


# --- argon2id, its costs, and upgrading old hashes ---


def test_new_hashes_are_argon2id_with_the_configured_costs(app, client, accounts):
    accounts.signup("alice")

    hashed = stored_hash(app, "alice")

    assert hashed.startswith(CONFIGURED_PREFIX)


@pytest.mark.parametrize(
    "old_hasher",
    [
        PasswordHasher(time_cost=2, memory_cost=8, parallelism=1),
        PasswordHasher(time_cost=1, memory_cost=16, parallelism=1),
        PasswordHasher(time_cost=1, memory_cost=16, parallelism=2),
        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I),
    ],
    ids=["more-iterations", "more-memory", "more-lanes", "argon2i"],
)
def test_a_hash_with_other_costs_is_rehashed_on_the_next_login(app, client, old_hasher):
    insert_user(app, "alice", old_hasher.hash(PASSWORD))

    response = login(client, "alice", PASSWORD)

    assert response.status_code == 200
    assert stored_hash(app, "alice").startswith(CONFIGURED_PREFIX)
    assert login(client, "alice", PASSWORD).status_code == 200
    assert login(client, "alice", "not the password").status_code == 401


def test_raising_the_costs_upgrades_existing_hashes_at_login(app, accounts):
    accounts.signup("alice")
    stronger = create_app(TEST_SETTINGS | {"ARGON2_TIME_COST": 2, "ARGON2_MEMORY_KIB": 16})

    response = login(stronger.test_client(), "alice", PASSWORD)

    assert response.status_code == 200
    assert stored_hash(app, "alice").startswith("$argon2id$v=19$m=16,t=2,p=1$")


def test_a_current_hash_is_left_as_it_is_at_login(app, client, accounts):
    accounts.signup("alice")
    before = stored_hash(app, "alice")

    response = login(client, "alice", PASSWORD)

    assert response.status_code == 200
    assert stored_hash(app, "alice") == before


def test_a_failed_login_does_not_rehash(app, client):
    old = PasswordHasher(time_cost=2, memory_cost=8, parallelism=1).hash(PASSWORD)
    insert_user(app, "alice", old)

    response = login(client, "alice", "not the password")

    assert response.status_code == 401
    assert stored_hash(app, "alice") == old


# --- bcrypt hashes from the earlier FastAPI service ---


@pytest.mark.parametrize("prefix", ["$2b$", "$2a$", "$2y$"])
def test_a_bcrypt_user_logs_in_with_the_old_password_and_is_moved_to_argon2id(app, client, prefix):
    insert_user(app, "legacy", bcrypt_hash(PASSWORD, prefix))

    response = login(client, "legacy", PASSWORD)

    assert response.status_code == 200
    token = response.get_json()["access_token"]
    me = client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert me.get_json()["username"] == "legacy"
    assert stored_hash(app, "legacy").startswith(CONFIGURED_PREFIX)


def test_after_the_move_to_argon2id_the_same_password_still_works(app, client):
    insert_user(app, "legacy", bcrypt_hash(PASSWORD))
    assert login(client, "legacy", PASSWORD).status_code == 200
    moved = stored_hash(app, "legacy")

    response = login(client, "legacy", PASSWORD)

    assert response.status_code == 200
    assert stored_hash(app, "legacy") == moved
    assert login(client, "legacy", "not the password").status_code == 401


def test_a_wrong_password_against_a_bcrypt_hash_answers_401_and_keeps_the_hash(app, client):
    old = bcrypt_hash(PASSWORD)
    insert_user(app, "legacy", old)

    response = login(client, "legacy", "not the password")

    assert response.status_code == 401
    assert response.get_json()["message"] == "Incorrect username or password."
    assert stored_hash(app, "legacy") == old


@pytest.mark.parametrize(
    "attempt",
    ["p" * 73, "p" * 72 + "and more", "пароль" * 7],
    ids=["73-bytes", "72-bytes-of-the-password-and-more", "multibyte-84-bytes"],
)
def test_an_attempt_over_72_bytes_against_a_bcrypt_hash_answers_401(app, client, attempt):
    """bcrypt only reads 72 bytes: truncating would let in anything that starts right."""
    old = bcrypt_hash("p" * 72)
    insert_user(app, "legacy", old)

    response = login(client, "legacy", attempt)

    assert response.status_code == 401
    assert response.get_json()["message"] == "Incorrect username or password."
    assert stored_hash(app, "legacy") == old
    assert login(client, "legacy", "p" * 72).status_code == 200


# --- pbkdf2_sha256 hashes, which the FastAPI service wrote after bcrypt ---

LONG_PASSWORD = "a" * 100 + "é"  # 102 bytes: more than bcrypt reads, nothing to pbkdf2


@pytest.mark.parametrize("password", [PASSWORD, LONG_PASSWORD], ids=["short", "102-bytes"])
def test_a_pbkdf2_sha256_user_logs_in_with_the_old_password_and_is_moved_to_argon2id(
    app, client, password
):
    insert_user(app, "legacy", pbkdf2_sha256_hash(password))

    response = login(client, "legacy", password)

    assert response.status_code == 200
    assert stored_hash(app, "legacy").startswith(CONFIGURED_PREFIX)
    assert login(client, "legacy", password).status_code == 200
    assert login(client, "legacy", password[:-1]).status_code == 401


def test_a_wrong_password_against_a_pbkdf2_sha256_hash_answers_401_and_keeps_the_hash(app, client):
    old = pbkdf2_sha256_hash(LONG_PASSWORD)
    insert_user(app, "legacy", old)

    for attempt in ["not the password", LONG_PASSWORD[:-1], LONG_PASSWORD + "a", "A" * 100 + "é"]:
        response = login(client, "legacy", attempt)

        assert response.status_code == 401
        assert response.get_json()["message"] == "Incorrect username or password."
    assert stored_hash(app, "legacy") == old


VALID_PBKDF2 = pbkdf2_sha256_hash(PASSWORD)
_, _, PBKDF2_ROUNDS, PBKDF2_SALT, PBKDF2_CHECKSUM = VALID_PBKDF2.split("$")
UNREADABLE_PBKDF2 = {
    "pbkdf2-no-fields": "$pbkdf2-sha256$",
    "pbkdf2-no-checksum": f"$pbkdf2-sha256${PBKDF2_ROUNDS}${PBKDF2_SALT}",
    "pbkdf2-empty-checksum": f"$pbkdf2-sha256${PBKDF2_ROUNDS}${PBKDF2_SALT}$",
    "pbkdf2-short-checksum": f"$pbkdf2-sha256${PBKDF2_ROUNDS}${PBKDF2_SALT}${PBKDF2_CHECKSUM[:20]}",
    "pbkdf2-bad-base64": f"$pbkdf2-sha256${PBKDF2_ROUNDS}${PBKDF2_SALT}$!{PBKDF2_CHECKSUM[1:]}",
    "pbkdf2-extra-field": f"{VALID_PBKDF2}$more",
    "pbkdf2-rounds-not-a-number": f"$pbkdf2-sha256$many${PBKDF2_SALT}${PBKDF2_CHECKSUM}",
    "pbkdf2-rounds-zero": f"$pbkdf2-sha256$0${PBKDF2_SALT}${PBKDF2_CHECKSUM}",
    "pbkdf2-rounds-negative": f"$pbkdf2-sha256$-1${PBKDF2_SALT}${PBKDF2_CHECKSUM}",
    "pbkdf2-rounds-zero-padded": f"$pbkdf2-sha256$0{PBKDF2_ROUNDS}${PBKDF2_SALT}${PBKDF2_CHECKSUM}",
    "pbkdf2-rounds-over-32-bits": f"$pbkdf2-sha256${2**64}${PBKDF2_SALT}${PBKDF2_CHECKSUM}",
    "pbkdf2-salt-not-ascii": f"$pbkdf2-sha256${PBKDF2_ROUNDS}$é${PBKDF2_CHECKSUM}",
}


@pytest.mark.parametrize(
    "hashed",
    [
        "not-a-hash",
        "",
        "!",
        "$1$saltsalt$md5cryptIsNotReadHere/",
        "$2b$nonsense",
        "$2b$12$tooshort",
        "$2b$99$" + "a" * 53,
        "$2b$12$" + "é" * 53,
        "$argon2id$garbage",
        "$argon2id$v=19$m=8,t=1,p=1$!!!!$!!!!",
        "$argon2id$v=19$m=8,t=1,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=8,t=1,p=1$é$x",
        *UNREADABLE_PBKDF2.values(),
    ],
    ids=[
        "plain-text",
        "empty",
        "locked-marker",
        "md5crypt",
        "bcrypt-no-cost",
        "bcrypt-too-short",
        "bcrypt-cost-99",
        "bcrypt-not-ascii",
        "argon2-no-fields",
        "argon2-bad-base64",
        "argon2-too-little-memory-for-its-lanes",
        "argon2-not-ascii",
        *UNREADABLE_PBKDF2,
    ],
)
def test_a_stored_hash_that_cannot_be_read_answers_401_not_500(app, client, hashed):
    insert_user(app, "legacy", hashed)

    response = login(client, "legacy", PASSWORD)

    assert response.status_code == 401
    assert response.get_json()["message"] == "Incorrect username or password."


# --- a failed login costs the same whether the user exists or not ---


def test_unknown_user_and_wrong_password_each_cost_one_verification_like_a_real_hash(
    app, client, accounts, argon2_verifications
):
    accounts.signup("alice")
    real_hash_costs = extract_parameters(stored_hash(app, "alice"))

    assert login(client, "alice", "not the password").status_code == 401
    known_user = list(argon2_verifications)
    argon2_verifications.clear()
    assert login(client, "nobody", "not the password").status_code == 401
    unknown_user = list(argon2_verifications)

    assert known_user == unknown_user == [real_hash_costs]


@pytest.mark.parametrize(
    ("hashed", "attempt"),
    [
        ("not-a-hash", PASSWORD),
        (bcrypt_hash("p" * 72), "p" * 73),
        (UNREADABLE_PBKDF2["pbkdf2-bad-base64"], PASSWORD),
    ],
    ids=["unreadable-hash", "over-72-bytes-for-bcrypt", "unreadable-pbkdf2"],
)
def test_a_hash_that_cannot_be_checked_costs_one_verification_like_an_unknown_user(
    app, client, argon2_verifications, hashed, attempt
):
    insert_user(app, "legacy", hashed)

    assert login(client, "legacy", attempt).status_code == 401
    known_user = list(argon2_verifications)
    argon2_verifications.clear()
    assert login(client, "nobody", attempt).status_code == 401

    assert known_user == list(argon2_verifications)
    assert len(known_user) == 1


def test_a_wrong_password_against_pbkdf2_sha256_costs_its_check_and_the_decoy_verification(
    app, client, argon2_verifications
):
    """A pbkdf2_sha256 check alone takes a few milliseconds, a fraction of an argon2id one."""
    insert_user(app, "legacy", pbkdf2_sha256_hash(PASSWORD, rounds=29000))

    assert login(client, "legacy", "not the password").status_code == 401
    known_user = list(argon2_verifications)
    argon2_verifications.clear()
    assert login(client, "nobody", "not the password").status_code == 401

    assert known_user == list(argon2_verifications)
    assert len(known_user) == 1


def test_the_unknown_user_verification_follows_the_configured_costs(argon2_verifications):
    other_costs = create_app(
        TEST_SETTINGS | {"ARGON2_TIME_COST": 2, "ARGON2_MEMORY_KIB": 16, "ARGON2_PARALLELISM": 2}
    )

    response = login(other_costs.test_client(), "nobody", PASSWORD)

    assert response.status_code == 401
    [used] = argon2_verifications
    assert (used.type, used.time_cost, used.memory_cost, used.parallelism) == (Type.ID, 2, 16, 2)


# --- which costs the configuration accepts ---


def production(time_cost: int, memory_kib: int, parallelism: int = 1) -> dict:
    return TEST_SETTINGS | {
        "DEVLAB_ENV": "production",
        "JWT_SECRET_KEY": STRONG_SECRET,
        "SMTP_URL": "smtps://mail.example.com",
        "PUBLIC_BASE_URL": "https://devlab.example",
        "ARGON2_TIME_COST": time_cost,
        "ARGON2_MEMORY_KIB": memory_kib,
        "ARGON2_PARALLELISM": parallelism,
    }


@pytest.mark.parametrize(
    ("time_cost", "memory_kib"),
    [(1, 8), (1, 47103), (2, 19455), (3, 12287), (4, 9215), (5, 7167), (10, 7167), (1, 19456)],
)
def test_production_refuses_argon2_costs_below_owasps_minimum(time_cost, memory_kib):
    with pytest.raises(ConfigError, match="ARGON2_MEMORY_KIB") as refusal:
        create_app(production(time_cost, memory_kib))

    assert "ARGON2_TIME_COST" in str(refusal.value)


@pytest.mark.parametrize(
    ("time_cost", "memory_kib", "parallelism"),
    [*((t, kib, 1) for t, kib in OWASP_ARGON2ID_MINIMUMS), (3, 65536, 4)],
    ids=[*(f"owasp-t{t}" for t, _ in OWASP_ARGON2ID_MINIMUMS), "defaults"],
)
def test_production_accepts_owasps_argon2id_settings_and_the_defaults(
    time_cost, memory_kib, parallelism
):
    app = create_app(production(time_cost, memory_kib, parallelism))

    assert app.config["ARGON2_MEMORY_KIB"] == memory_kib


def test_development_may_use_cheap_argon2_costs():
    app = create_app(TEST_SETTINGS | {"DEVLAB_ENV": "development"})

    assert (app.config["ARGON2_TIME_COST"], app.config["ARGON2_MEMORY_KIB"]) == (1, 8)


@pytest.mark.parametrize("environment", ["development", "production"])
def test_less_than_8_kib_per_argon2_lane_is_refused_everywhere(environment):
    settings = production(3, 65536) | {
        "DEVLAB_ENV": environment,
        "ARGON2_MEMORY_KIB": 16,
        "ARGON2_PARALLELISM": 4,
    }

    with pytest.raises(ConfigError, match="ARGON2_PARALLELISM"):
        create_app(settings)


COMMON = ["password", "12345678", "PASSWORD", "Baseball", "iLoveYou", "TRUSTNO1", "qwertyuiop"]


@pytest.mark.parametrize("common", COMMON)
def test_signup_refuses_a_common_password_in_any_case_and_says_why(client, audit_rows, common):
    response = client.post(
        "/signup", json={"username": "alice", "email": "alice@example.com", "password": common}
    )

    assert response.status_code == 422
    [message] = response.get_json()["errors"]["json"]["password"]
    assert "10,000 most common passwords" in message
    assert audit_rows("signup") == []


@pytest.mark.parametrize("common", COMMON)
def test_a_password_change_refuses_a_common_password(client, accounts, common):
    headers = accounts.headers("alice")

    response = client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": common}, headers=headers
    )

    assert response.status_code == 422
    assert "most common" in response.get_json()["errors"]["json"]["new_password"][0]
    assert login(client, "alice", PASSWORD).status_code == 200


@pytest.mark.parametrize("uncommon", ["password-of-mine-7", "12345678x9", PASSWORD])
def test_passwords_beyond_the_list_are_accepted(client, uncommon):
    response = client.post(
        "/signup", json={"username": "alice", "email": "alice@example.com", "password": uncommon}
    )

    assert response.status_code == 201


def test_the_bundled_list_holds_ten_thousand_passwords_with_its_source_named():
    listed = passwords.COMMON_PASSWORDS_FILE.read_text().split("\n")[:-1]
    source = (passwords.COMMON_PASSWORDS_FILE.parent / "COMMON-PASSWORDS-SOURCE.txt").read_text()

    assert len(listed) == len(set(listed)) == 10_000
    assert listed[:3] == ["123456", "password", "12345678"]
    assert "zxcvbn" in source
    assert "MIT License" in source
