"""Real gunicorn processes for the tests that need what only a real server shows."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import TEST_DATABASE_URL

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEVLAB_SETTING_PREFIXES = (
    *("DEVLAB_", "JWT_", "DATABASE_", "ARGON2_", "TRUSTED_", "RATELIMIT_", "CORS_", "FORCE_"),
    *("GUNICORN_", "GRACEFUL_", "WEB_CONCURRENCY", "HOST", "PORT"),
    *("LOG_FORMAT", "METRICS_", "PROMETHEUS_MULTIPROC_DIR"),
    *("SMTP_", "MAIL_FROM", "PUBLIC_BASE_URL", "PASSWORD_RESET_"),
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_env(**settings: str) -> dict:
    """The environment without any DevLab setting of the developer's own, plus `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(DEVLAB_SETTING_PREFIXES)
    }
    isolated = {
        "FLASK_APP": "wsgi",
        # The developer's .env must not reach the servers and commands the tests start,
        "FLASK_SKIP_DOTENV": "1",
        # nor may they write a development key or database into the checkout's instance/.
        "DEVLAB_INSTANCE_PATH": tempfile.mkdtemp(prefix="devlab-test-instance-"),
    }
    return env | isolated | settings


@contextmanager
def gunicorn_serving(log: Path, **settings: str):
    """gunicorn on the test database with cheap hashing, unless `settings` say otherwise;
    yields its base URL.

    The server's output goes to `log`. It is stopped on the way out, whatever happened.
    """
    with gunicorn_process(log, **settings) as (base, _server):
        yield base


@contextmanager
def gunicorn_process(log: Path, *, errors: Path | None = None, **settings: str):
    """As gunicorn_serving, but yields (base URL, the gunicorn master's Popen) as well.

    Its stderr goes to `errors` if given, else with its stdout to `log`.
    """
    port = free_port()
    defaults = {
        "DATABASE_URL": TEST_DATABASE_URL,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "8",
        "ARGON2_PARALLELISM": "1",
    }
    env = clean_env(**(defaults | settings), PORT=str(port))
    with log.open("w") as output, (errors or Path(os.devnull)).open("w") as error_output:
        server = subprocess.Popen(
            [BIN / "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            cwd=PROJECT,
            env=env,
            stdout=output,
            stderr=error_output if errors is not None else subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):  # noqa: S310 (loopback)
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield base, server
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=30)
