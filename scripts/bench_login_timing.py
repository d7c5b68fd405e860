"""Compare failed logins: a known user with a wrong password, and a username nobody has.

Both should cost the same, or the time a 401 takes tells who has an account. The script
alternates the two, prints their median times side by side with the ratio, and exits with
status 1 when they differ by more than 20 %.

By default it builds the app in this process, as production would (DEVLAB_ENV=production, so
the argon2 costs are the defaults unless ARGON2_* say otherwise), on the PostgreSQL at
TEST_DATABASE_URL, else DATABASE_URL. Its tables live in a throwaway schema, dropped at the
end, so the database's own tables are not touched. With --url it times a running server
instead, where it signs up one throwaway user (`bench-` and 12 hex digits) and leaves it there;
start that server with RATELIMIT_ENABLED=0, or its login limits answer 429 after a few rounds.

In-process, `--known-hash pbkdf2_sha256` gives the known user, once signed up, a passlib
pbkdf2_sha256 hash of 29,000 rounds instead, as the FastAPI version wrote them: a wrong password
against such an account must not answer sooner than an unknown username.

    .venv/bin/python scripts/bench_login_timing.py [--rounds 25] [--url http://127.0.0.1:8005]
        [--known-hash pbkdf2_sha256]
"""

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

# Run as a file, Python looks for imports in scripts/; config and devlab are one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MAX_DIFFERENCE = 0.20
WARM_UP_ROUNDS = 3
MAX_ROUNDS = 200

# Sends one JSON POST and answers the status code.
Post = Callable[[str, dict], int]
# Replaces a user's stored hash (in-process only).
SetHash = Callable[[str, str], None]


def main() -> int:
    options = parse_arguments()
    username = f"bench-{secrets.token_hex(6)}"
    password = secrets.token_urlsafe(24)
    if options.url:
        print(f"Server: {options.url} (argon2 costs: the server's own)")
        timings = run(http_post(options.url), username, password, options.rounds)
    else:
        with in_process_app(options.database_url) as (post, set_hash, description):
            print(f"{description}; the known user's hash: {options.known_hash}")
            timings = run(post, username, password, options.rounds, options.known_hash, set_hash)
    return report(*timings, options.rounds)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=25,
        help=f"timed logins of each kind, 1 to {MAX_ROUNDS} (default 25), "
        f"after {WARM_UP_ROUNDS} untimed ones",
    )
    parser.add_argument("--url", help="time the DevLab server at this http(s) URL instead")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL for the in-process app (default: TEST_DATABASE_URL, else DATABASE_URL)",
    )
    parser.add_argument(
        "--known-hash",
        choices=["argon2id", "pbkdf2_sha256"],
        default="argon2id",
        help="the known user's hash (in-process only): DevLab's own (default), or the FastAPI "
        "version's pbkdf2_sha256 at 29,000 rounds",
    )
    options = parser.parse_args()
    if not 1 <= options.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    if options.url and not options.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    if options.url and options.known_hash != "argon2id":
        parser.error("--known-hash needs the in-process app, not --url")
    return options


@contextmanager
def in_process_app(database_url: str | None, **settings) -> Iterator[tuple[Post, SetHash, str]]:
    """The app as production builds it, in a schema of its own that is dropped afterwards;
    `settings` add to or override its settings (bench/reset_timing.py names its mail server)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    from flask_migrate import upgrade
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from config import Config, normalize_database_url
    from devlab import create_app
    from devlab.extensions import db

    # Like tests/conftest.py, a development tool reading the test database's address itself.
    url = normalize_database_url(
        database_url or os.environ.get("TEST_DATABASE_URL") or Config.SQLALCHEMY_DATABASE_URI
    )
    if not url.startswith("postgresql+psycopg2://"):
        sys.exit("Needs PostgreSQL: set TEST_DATABASE_URL or DATABASE_URL, or pass --database-url.")
    schema = f"bench_login_{secrets.token_hex(4)}"
    app = create_app(
        {
            "DEVLAB_ENV": "production",
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            # Production wants one; these heads are never kept.
            "AUDIT_SIGNING_KEY": Ed25519PrivateKey.generate()
            .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            .decode("ascii"),
            # No mail is sent: production just wants to know where reset links would go.
            "SMTP_URL": "smtp://127.0.0.1:25",
            "PUBLIC_BASE_URL": "https://devlab.test",
            # Hundreds of failed logins from one address: the rate limits would stop them.
            "RATELIMIT_ENABLED": False,
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": {
                "connect_args": {"connect_timeout": 5, "options": f"-csearch_path={schema}"}
            },
        }
        | settings
    )
    with app.app_context():
        db.session.execute(text(f"CREATE SCHEMA {schema}"))
        db.session.commit()
    try:
        with app.app_context():
            upgrade()
        client = app.test_client()
        config = app.config
        description = (
            f"In-process app on {make_url(url).render_as_string(hide_password=True)}, "
            f"schema {schema}; argon2id t={config['ARGON2_TIME_COST']}, "
            f"m={config['ARGON2_MEMORY_KIB']} KiB, p={config['ARGON2_PARALLELISM']}"
        )

        def set_hash(username: str, hashed: str) -> None:
            with app.app_context():
                db.session.execute(
                    text("UPDATE users SET hashed_password = :hashed WHERE username = :username"),
                    {"hashed": hashed, "username": username},
                )
                db.session.commit()

        yield (lambda path, body: client.post(path, json=body).status_code), set_hash, description
    finally:
        with app.app_context():
            db.session.remove()
            with db.engine.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            db.engine.dispose()


def http_post(base_url: str) -> Post:
    def post(path: str, body: dict) -> int:
        request = urllib.request.Request(  # noqa: S310 (http or https only, checked above)
            base_url.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                response.read()
                return response.status
        except urllib.error.HTTPError as error:
            error.read()
            return error.code
        except urllib.error.URLError as error:
            sys.exit(f"Cannot reach {base_url}: {error.reason}")

    return post


def run(
    post: Post,
    username: str,
    password: str,
    rounds: int,
    known_hash: str = "argon2id",
    set_hash: SetHash | None = None,
) -> tuple[list[float], list[float]]:
    """Sign `username` up, then time failed logins: theirs and a stranger's, in turn."""
    account = {"username": username, "email": f"{username}@example.com", "password": password}
    expect(post("/signup", account), 201, "signing up the benchmark user")
    if known_hash == "pbkdf2_sha256":
        from passlib.hash import pbkdf2_sha256

        set_hash(username, pbkdf2_sha256.using(rounds=29000).hash(password))
    attempts = {
        "known": {"username": username, "password": password[::-1]},
        "unknown": {"username": f"nobody-{secrets.token_hex(6)}", "password": password[::-1]},
    }
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for round_number in range(WARM_UP_ROUNDS + rounds):
        # Alternate which goes first, so neither always follows the other.
        order = ("known", "unknown") if round_number % 2 == 0 else ("unknown", "known")
        for kind in order:
            started = time.perf_counter()
            status = post("/login", attempts[kind])
            elapsed = time.perf_counter() - started
            expect(status, 401, f"a failed login ({kind} user)")
            if round_number >= WARM_UP_ROUNDS:
                times[kind].append(elapsed * 1000)
    return times["known"], times["unknown"]


def expect(status: int, wanted: int, doing: str) -> None:
    if status != wanted:
        sys.exit(f"Expected {wanted} when {doing}, got {status}; nothing was measured.")


def report(
    known: list[float],
    unknown: list[float],
    rounds: int,
    *,
    heading: str = "",
    labels: tuple[str, str] = ("known user, wrong password", "unknown user"),
    ratio_label: str = "unknown / known",
    decimals: int = 1,
) -> int:
    """Print both kinds' median, min and max and their ratio; 1 if they differ by more than
    MAX_DIFFERENCE, else 0. bench/reset_timing.py reports the same way, with its own labels."""
    known_median, unknown_median = statistics.median(known), statistics.median(unknown)
    ratio = unknown_median / known_median
    within = max(ratio, 1 / ratio) <= 1 + MAX_DIFFERENCE
    print(
        f"{rounds} timed rounds after {WARM_UP_ROUNDS} untimed; {os.cpu_count()} CPUs, "
        f"{platform.platform()}, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(f"{heading:28}{'median':>10}{'min':>10}{'max':>10}")
    for label, times in zip(labels, (known, unknown), strict=True):
        print(
            f"{label:28}{statistics.median(times):>7.{decimals}f} ms"
            f"{min(times):>7.{decimals}f} ms{max(times):>7.{decimals}f} ms"
        )
    verdict = "within" if within else "NOT within"
    print(f"{ratio_label:28}{ratio:>10.3f}  ({verdict} {MAX_DIFFERENCE:.0%} of each other)")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
