"""Time POST /password/forgot for an address with an account and for one without.

Both must take as long, or the time a 202 takes tells who has an account
(`make bench-reset-timing`, also run by `make bench`). The app is built in this process as
production builds it (scripts/bench_login_timing.py's `in_process_app`: DEVLAB_ENV=production,
rate limits off, a throwaway schema on the PostgreSQL of TEST_DATABASE_URL, else DATABASE_URL)
and mails its reset links, for real, to an SMTP server in another process (aiosmtpd's Sink,
which accepts and discards them). The two kinds of request alternate, each timed from the call
to the answer; between requests the script pauses (untimed) so that a mail still being sent
does not fall into the next measurement. It prints both medians and their ratio, and exits
with status 1 when they differ by more than 20 %.

    .venv/bin/python bench/reset_timing.py [--rounds 100]
"""

import argparse
import secrets
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# Run as a file, Python looks for imports in bench/; config, devlab and scripts are one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_login_timing import (
    WARM_UP_ROUNDS,
    expect,
    in_process_app,
    report,
)

MAX_ROUNDS = 1000
# Long enough for the outbox thread to hand a mail to a server on loopback (a few ms).
PAUSE_SECONDS = 0.03


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="timed requests of each kind")
    parser.add_argument("--database-url", help="PostgreSQL (default: TEST_DATABASE_URL)")
    options = parser.parse_args()
    if not 1 <= options.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    with smtp_sink() as smtp_url:
        settings = {"SMTP_URL": smtp_url, "PUBLIC_BASE_URL": "https://devlab.test"}
        with in_process_app(options.database_url, **settings) as (post, _set_hash, description):
            print(f"{description}; mail to {smtp_url} (aiosmtpd Sink, another process)")
            known, unknown = run(post, options.rounds)
    from prometheus_client import REGISTRY  # imported by the app, in its mode

    sent = REGISTRY.get_sample_value("devlab_mails_sent_total") or 0
    failed = REGISTRY.get_sample_value("devlab_mail_failures_total") or 0
    print(f"Reset links mailed: {sent:.0f}, failed: {failed:.0f}")
    return report(
        known,
        unknown,
        options.rounds,
        heading="POST /password/forgot",
        labels=("address of an account", "address of nobody"),
        ratio_label="nobody / account",
        decimals=2,
    )


@contextmanager
def smtp_sink():
    """aiosmtpd's Sink on a free loopback port, in a process of its own; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("The SMTP sink (aiosmtpd) did not start.")
                time.sleep(0.1)
        yield f"smtp://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def run(post, rounds: int) -> tuple[list[float], list[float]]:
    """Sign an account up, then time reset requests for its address and a stranger's, in turn."""
    username = f"bench-{secrets.token_hex(6)}"
    account = {
        "username": username,
        "email": f"{username}@example.com",
        "password": secrets.token_urlsafe(24),
    }
    expect(post("/signup", account), 201, "signing up the benchmark user")
    emails = {"known": account["email"], "unknown": f"nobody-{secrets.token_hex(6)}@example.com"}
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for round_number in range(WARM_UP_ROUNDS + rounds):
        order = ("known", "unknown") if round_number % 2 == 0 else ("unknown", "known")
        for kind in order:
            started = time.perf_counter()
            status = post("/password/forgot", {"email": emails[kind]})
            elapsed = time.perf_counter() - started
            expect(status, 202, f"asking for a reset link ({kind} address)")
            if round_number >= WARM_UP_ROUNDS:
                times[kind].append(elapsed * 1000)
            time.sleep(PAUSE_SECONDS)
    return times["known"], times["unknown"]


if __name__ == "__main__":
    sys.exit(main())
