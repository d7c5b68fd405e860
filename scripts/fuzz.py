"""Fuzz the real API with schemathesis, against its own OpenAPI document: `make fuzz`.

It serves the app as production does, under gunicorn on PostgreSQL, and runs `st run` over
every operation of /openapi.json with every check schemathesis has (`--checks all`). Any
failure of a check, any error of schemathesis, and any traceback or error in the server's log
fails the run (exit 1).

The steps:

1. A database of its own, FUZZ_DATABASE_URL (by default `devlab_fuzz` on the PostgreSQL server
   of TEST_DATABASE_URL), created if missing; its schema is dropped and migrated anew. An
   advisory lock keeps a second run off it meanwhile.
2. An admin, `fuzz-admin`, made with `flask create-admin --password-stdin`.
3. gunicorn on a free loopback port, with a random JWT key, cheap argon2 costs (the fuzzer signs
   up and logs in thousands of times) and RATELIMIT_ENABLED=0: with limits on, most requests
   would be 429s that test nothing. tests/test_ratelimit.py tests the limits.
4. schemathesis, with scripts/fuzz_hooks.py giving every call its credentials (see there).
5. gunicorn stopped, whatever happened.

Settings, from the environment:

    FUZZ_EXAMPLES      examples per operation and phase (default 50, what CI uses)
    FUZZ_SEED          hypothesis seed, so that a run can be repeated (default 20261125)
    FUZZ_WORKERS       concurrent schemathesis workers (default 2)
    FUZZ_DATABASE_URL  the database to use, and wipe
    FUZZ_REPORT_DIR    where the server log and schemathesis' reports go (default a temp dir)

    .venv/bin/python scripts/fuzz.py
"""

import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:5432/devlab_test"
ADMIN_USERNAME = "fuzz-admin"
# What the server log must never hold: a traceback, or a line logged at ERROR or above, by
# gunicorn ("[ERROR]") or by the app through Flask's default handler ("ERROR in trail: ...").
LOG_ALARMS = re.compile(r"Traceback|\[(ERROR|CRITICAL)\]|^\[[^]]+\] (ERROR|CRITICAL) in ")


def main() -> int:
    database_url = fuzz_database_url()
    examples = int(os.environ.get("FUZZ_EXAMPLES") or 50)
    seed = int(os.environ.get("FUZZ_SEED") or 20261125)
    workers = int(os.environ.get("FUZZ_WORKERS") or 2)
    report_dir = Path(os.environ.get("FUZZ_REPORT_DIR") or tempfile.mkdtemp(prefix="devlab-fuzz-"))
    report_dir.mkdir(parents=True, exist_ok=True)
    with empty_database_of_our_own(database_url):
        return fuzz(database_url, examples, seed, workers, report_dir)


def fuzz(database_url: str, examples: int, seed: int, workers: int, report_dir: Path) -> int:
    server_log = report_dir / "gunicorn.log"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = server_env(database_url, port)
    run_flask(env, ["db", "upgrade"])
    password = secrets.token_urlsafe(24)
    run_flask(
        env,
        ["create-admin", ADMIN_USERNAME, f"{ADMIN_USERNAME}@example.com", "--password-stdin"],
        stdin=password + "\n",
    )

    print(f"Fuzzing {base_url}: {examples} examples an operation, seed {seed}, logs: {report_dir}")
    with server_log.open("w") as log:
        server = subprocess.Popen(
            [BIN / "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(base_url, server, server_log)
        fuzz_status = run_schemathesis(
            base_url, password, examples, seed, workers, report_dir, database_url
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    alarms = [line for line in server_log.read_text().splitlines() if is_alarm(line)]
    if alarms:
        print(f"\nThe server log ({server_log}) has {len(alarms)} error lines, the first ones:")
        print("\n".join(alarms[:20]))
    if fuzz_status != 0 or alarms:
        print("\nmake fuzz: FAILED")
        return 1
    print("\nmake fuzz: no failures")
    return 0


def is_alarm(log_line: str) -> bool:
    return LOG_ALARMS.search(log_line) is not None


def fuzz_database_url() -> str:
    configured = os.environ.get("FUZZ_DATABASE_URL")
    if configured:
        return configured
    test_url = make_url(os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL)
    return test_url.set(database="devlab_fuzz").render_as_string(hide_password=False)


@contextmanager
def empty_database_of_our_own(url: str) -> Iterator[None]:
    """Create the fuzzing database if it is missing and empty it, and keep other runs out.

    Two runs on one database would drop each other's tables mid-run: the second one stops.
    """
    target = make_url(url)
    connect = {
        "host": target.host,
        "port": target.port or 5432,
        "user": target.username,
        "password": target.password,
        "connect_timeout": 5,
    }
    try:
        server = psycopg2.connect(dbname="postgres", **connect)
    except psycopg2.OperationalError as error:
        sys.exit(
            f"PostgreSQL is not reachable at {target.render_as_string(hide_password=True)}: "
            f"{str(error).strip()}\nStart PostgreSQL or set FUZZ_DATABASE_URL."
        )
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
    server.close()
    database = psycopg2.connect(dbname=target.database, **connect)
    database.autocommit = True
    try:
        with database.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(hashtext('devlab make fuzz'))")
            if not cursor.fetchone()[0]:
                sys.exit(f"Another make fuzz is using {target.database}; set FUZZ_DATABASE_URL.")
            cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        yield  # the lock lasts as long as this connection
    finally:
        database.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# LOG_FORMAT too: the server's log is searched for LOG_ALARMS, which are text lines.
DEVLAB_SETTING_PREFIXES = (
    *("DEVLAB_", "JWT_", "DATABASE_", "ARGON2_", "TRUSTED_", "RATELIMIT_"),
    *("LOG_FORMAT", "METRICS_", "PROMETHEUS_MULTIPROC_DIR"),
    # Never a developer's mail server: the fuzzer asks for reset links by the thousand, which
    # the server only logs without SMTP_URL.
    *("SMTP_", "MAIL_FROM", "PUBLIC_BASE_URL", "PASSWORD_RESET_"),
)


def server_env(database_url: str, port: int) -> dict:
    """The environment without any DevLab setting of the developer's own, plus the fuzz ones."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(DEVLAB_SETTING_PREFIXES)
    }
    return env | {
        "FLASK_APP": "wsgi",
        # Nor the developer's .env, which gunicorn.conf.py and `flask` would read.
        "FLASK_SKIP_DOTENV": "1",
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "8",
        "ARGON2_PARALLELISM": "1",
        "RATELIMIT_ENABLED": "0",
    }


def run_flask(env: dict, args: list[str], stdin: str | None = None) -> None:
    subprocess.run(
        [BIN / "flask", *args],
        cwd=PROJECT,
        env=env,
        input=stdin,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def wait_until_serving(base_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2):  # noqa: S310 (loopback)
                return
        except (OSError, urllib.error.URLError):
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"gunicorn did not start:\n{log.read_text()}")
        time.sleep(0.2)


def run_schemathesis(
    base_url: str,
    password: str,
    examples: int,
    seed: int,
    workers: int,
    report_dir: Path,
    database_url: str,
) -> int:
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": str(PROJECT / "scripts" / "fuzz_hooks.py"),
        "FUZZ_BASE_URL": base_url,
        "FUZZ_ADMIN_USERNAME": ADMIN_USERNAME,
        "FUZZ_ADMIN_PASSWORD": password,
        "FUZZ_DATABASE_URL": database_url,
    }
    command = [
        BIN / "st",
        "--config-file",
        PROJECT / "scripts" / "schemathesis.toml",
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    return subprocess.run(command, cwd=PROJECT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
