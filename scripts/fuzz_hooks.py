"""schemathesis hooks for `make fuzz` (scripts/fuzz.py): who each fuzzed call is.

Most calls carry an access token of `fuzz-admin`, so the fuzzer gets past the admin checks and
reaches every route's real work. Four operations would ruin that token or its owner if they
did succeed, so each of their calls gets an account of its own, signed up and logged in just
before the call:

- `POST /logout` revokes the token it is called with, and `POST /logout/all` every token of
  its caller: a fresh account's access token.
- `POST /me/password` revokes its caller's other logins and changes the password: the same.
- `PATCH /me` renames its caller and `DELETE /me` erases it: the same. Both need the caller's
  current password; when the one generated is a valid password (so that the request is valid
  or invalid for its other fields alone), the account's real one takes its place, so that
  profile changes and erasures really happen.
- `POST /token/refresh` takes a refresh token, which works once: a fresh login's.

The admin routes can take the role or the account away from `fuzz-admin` itself, once the
fuzzer has promoted somebody else (with a single active admin they answer 409). That is the
API working as documented, but every call after it would then only be a 401 or 403 and test
nothing. So when a demotion or deactivation of `fuzz-admin` succeeds, `after_call` gives the
role and the account back in the database, and the next call logs in anew, since deactivation
revoked every token the account had. `PATCH /admin/users/{user_id}` can rename `fuzz-admin`,
which would then log in under that name no more: `after_call` gives the name back too.

One rule of the audit reads cannot be written in OpenAPI 3.0, whose query parameters are each
optional or required on their own: `target_id` needs `target_type` (422 without it). A case
with the id alone gets `target_type=note` (`map_case`), so that input the document allows
stays valid, and the fuzzer still tries every value of both.
"""

import os
import secrets
import threading

import psycopg2
import requests
import schemathesis
from sqlalchemy.engine import make_url

BASE_URL = os.environ["FUZZ_BASE_URL"]
ADMIN_USERNAME = os.environ["FUZZ_ADMIN_USERNAME"]
ADMIN_PASSWORD = os.environ["FUZZ_ADMIN_PASSWORD"]
DATABASE_URL = make_url(os.environ["FUZZ_DATABASE_URL"])
OWN_ACCOUNT_OPERATIONS = [
    "POST /logout",
    "POST /logout/all",
    "POST /me/password",
    "PATCH /me",
    "DELETE /me",
    "POST /token/refresh",
]
# What the API takes as a current password: 1 to 1024 characters, no NUL, valid Unicode.
PASSWORD_MAX = 1024
# What can take the role, the account or the name away from `fuzz-admin`, by method.
ADMIN_CHANGES = {
    ("POST", "/admin/demote/{user_id}"),
    ("POST", "/admin/users/{user_id}/deactivate"),
    ("PATCH", "/admin/users/{user_id}"),
}
AUDIT_READS = ["/audit/logs", "/audit/logs/export"]


def log_in(username: str, password: str) -> requests.Response:
    return requests.post(
        f"{BASE_URL}/login", json={"username": username, "password": password}, timeout=30
    )


def new_account() -> tuple[dict, str]:
    """Sign a new user up and log in: the token pair of that login, and the password.

    The other worker may deactivate the account in between, since its id is the next one the
    fuzzer can draw; then another account is made.
    """
    for _attempt in range(3):
        username = f"fuzz-{secrets.token_hex(8)}"
        password = secrets.token_urlsafe(18)
        account = {"username": username, "email": f"{username}@example.com", "password": password}
        requests.post(f"{BASE_URL}/signup", json=account, timeout=30).raise_for_status()
        login = log_in(username, password)
        if login.status_code == 200:
            return login.json(), password
    raise RuntimeError(f"Three new accounts in a row could not log in: {login.status_code}")


def bearer(case, token: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def is_valid_password(value) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= PASSWORD_MAX or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


@schemathesis.auth(refresh_interval=None).apply_to(name=OWN_ACCOUNT_OPERATIONS)
class OwnAccount:
    """A new account for every call (no caching), the token the operation needs, and the
    account's password where the body holds a valid current password."""

    def get(self, case, context):
        tokens, password = new_account()
        if context.operation.path == "/token/refresh":
            return tokens["refresh_token"], password
        return tokens["access_token"], password

    def set(self, case, credentials, context):
        token, password = credentials
        bearer(case, token)
        body = case.body
        own_profile = context.operation.path == "/me" and isinstance(body, dict)
        if own_profile and is_valid_password(body.get("current_password")):
            case.body = {**body, "current_password": password}


class AdminLogin:
    """`fuzz-admin`'s access token, one login for as long as it works."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None

    def token(self) -> str:
        with self._lock:
            if self._token is None:
                login = log_in(ADMIN_USERNAME, ADMIN_PASSWORD)
                login.raise_for_status()
                self._token = login.json()["access_token"]
            return self._token

    def forget(self) -> None:
        with self._lock:
            self._token = None


ADMIN_LOGIN = AdminLogin()


@schemathesis.auth(refresh_interval=None).skip_for(name=OWN_ACCOUNT_OPERATIONS)
class FuzzAdmin:
    def get(self, case, context):
        return ADMIN_LOGIN.token()

    def set(self, case, token, context):
        bearer(case, token)


def database():
    return psycopg2.connect(
        host=DATABASE_URL.host,
        port=DATABASE_URL.port or 5432,
        user=DATABASE_URL.username,
        password=DATABASE_URL.password,
        dbname=DATABASE_URL.database,
    )


def admin_id() -> int:
    """`fuzz-admin`'s id, read once: unlike its name, no call can change it."""
    if not hasattr(admin_id, "known"):
        connection = database()
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute("SELECT id FROM users WHERE username = %s", (ADMIN_USERNAME,))
                (admin_id.known,) = cursor.fetchone()
        finally:
            connection.close()
    return admin_id.known


@schemathesis.hook
def after_call(context, case, response):
    """Give `fuzz-admin` back the role, the account or the name that a call has just changed."""
    if (case.method, case.operation.path) not in ADMIN_CHANGES or response.status_code != 200:
        return
    if response.json().get("id") != admin_id():
        return
    connection = database()
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "UPDATE users SET is_admin = true, is_active = true, username = %s WHERE id = %s",
                (ADMIN_USERNAME, admin_id()),
            )
    finally:
        connection.close()
    if case.method == "POST":  # a deactivation revoked its tokens; a rename revokes none
        ADMIN_LOGIN.forget()


@schemathesis.hook.apply_to(path=AUDIT_READS)
def map_case(context, case):
    """A `target_id` without its `target_type` gets one (see the module's docstring)."""
    query = case.query
    if isinstance(query, dict) and "target_id" in query and "target_type" not in query:
        query["target_type"] = "note"
    return case
