"""DevLab settings, read from the environment.

The `flask` command and gunicorn.conf.py load a `.env` file into the environment first, unless
FLASK_SKIP_DOTENV is set; in-process uses such as the tests see only the real environment.

This is the only module that reads `os.environ`; the rest of the code reads `current_app.config`.

| variable                 | default                 | meaning                                   |
|--------------------------|-------------------------|-------------------------------------------|
| DEVLAB_ENV               | development             | `production` demands a real JWT secret    |
| DATABASE_URL             | SQLite, instance/       | PostgreSQL URLs always use psycopg2       |
| MIGRATION_DATABASE_URL   | DATABASE_URL            | the owner role `flask db` migrates as     |
| DEVLAB_INSTANCE_PATH     | instance/ (project)     | folder of the SQLite file and dev keys    |
| DATABASE_TIMEOUT_SECONDS | 2                       | longest statement of a request, see below |
| JWT_SECRET_KEY           | generated (development) | HS256 signing key, at least 32 bytes      |
| AUDIT_SIGNING_KEY        | generated (development) | Ed25519 key (PEM or its file) for heads   |
| JWT_ACCESS_TOKEN_MINUTES | 15                      | lifetime of an access token               |
| JWT_REFRESH_TOKEN_DAYS   | 14                      | lifetime of a refresh token               |
| JWT_SESSION_MAX_DAYS     | 30                      | no refresh extends a login past this      |
| JWT_REFRESH_REUSE_GRACE_SECONDS | 10               | a just-used refresh token: 401, no revoke |
| TRUSTED_PROXY_HOPS       | 0                       | proxies whose X-Forwarded-For is believed |
| FORCE_HTTPS              | 0                       | 1: send Strict-Transport-Security         |
| CORS_ORIGINS             | (none: CORS off)        | comma-separated origins allowed by CORS   |
| ARGON2_TIME_COST         | 3                       | argon2id iterations                       |
| ARGON2_MEMORY_KIB        | 65536                   | argon2id memory, KiB                      |
| ARGON2_PARALLELISM       | 4                       | argon2id lanes                            |
| GUNICORN_THREADS         | 4                       | threads per worker (gunicorn.conf.py)     |
| GRACEFUL_TIMEOUT_SECONDS | 20                      | SIGTERM: how long requests may finish     |
| DEVLAB_TEST_REQUEST_DELAY_SECONDS | 0              | tests only: delay of `X-Test-Delay` calls |
| PASSWORD_HASHING_CONCURRENCY | 1                   | password hashes per worker at once        |
| RATELIMIT_ENABLED        | 1                       | 0 turns every rate limit off              |
| RATELIMIT_STORAGE_URI    | memory://               | redis://host:6379/0 shares limits         |
| RATELIMIT_LOGIN          | 10 per minute           | logins per client address                 |
| RATELIMIT_LOGIN_FAILURES | 5 per 15 minutes        | failed logins per username                |
| RATELIMIT_SIGNUP         | 10 per minute           | signups per client address                |
| RATELIMIT_REFRESH        | 10 per minute           | token refreshes per client address        |
| RATELIMIT_PASSWORD       | 10 per minute           | current-password checks per address       |
| RATELIMIT_PASSWORD_FAILURES | 5 per 15 minutes     | wrong current passwords per account       |
| RATELIMIT_NOTES_WRITE    | 120 per minute          | note creations and changes per user       |
| RATELIMIT_AUDIT_EXPORT   | 10 per hour             | exports of the audit trail per admin      |
| RATELIMIT_PASSWORD_RESET | 5 per hour              | /password/forgot and /password/reset per  |
|                          |                         | address, /password/forgot per email too   |
| PASSWORD_RESET_ENABLED   | 1                       | 0: no reset links (the routes answer 403) |
| PASSWORD_RESET_MINUTES   | 30                      | how long a reset link works               |
| SMTP_URL                 | (none: dev logs mails)  | smtp[s]://[user:pass@]host[:port]         |
| SMTP_CA_FILE             | (the system's)          | CA certificates that verify the SMTP TLS  |
| MAIL_FROM                | DevLab <noreply@host>   | sender; host from PUBLIC_BASE_URL         |
| PUBLIC_BASE_URL          | http://localhost:8005   | where the reset link leads                |
| LOG_FORMAT               | text (json in Docker)   | json: one JSON object per log line        |
| METRICS_TOKEN            | (none)                  | bearer token that may read GET /metrics   |
| METRICS_ALLOW            | 127.0.0.0/8,::1         | addresses that may read /metrics, or none |
| PROMETHEUS_MULTIPROC_DIR | a new temporary folder  | gunicorn only: where workers keep metrics |

JWT_SECRET_KEY, AUDIT_SIGNING_KEY and DATABASE_URL may each come from a file instead, named
by JWT_SECRET_KEY_FILE, AUDIT_SIGNING_KEY_FILE or DATABASE_URL_FILE (as Docker and Kubernetes
mount secrets); setting both a variable and its _FILE is refused.

In production the argon2id costs must reach one of OWASP's minimum settings (see
`OWASP_ARGON2ID_MINIMUMS`); development and the tests may use cheaper ones.

DATABASE_TIMEOUT_SECONDS is PostgreSQL's statement_timeout for the app's work, not for CLI commands;
a wait for a row lock ends at half of it, a connection attempt at all of it. A PostgreSQL that
stops answering altogether is found out in under a second regardless (devlab/db_timeout.py).

A worker hashes at most PASSWORD_HASHING_CONCURRENCY passwords at once, at a lower CPU priority;
further requests that hash wait for a slot, but hashing and waiting together never take more
than GUNICORN_THREADS - 1 of a worker's threads (devlab/passwords.py).

Password reset links go out by SMTP (devlab/mail.py): smtps:// is TLS from the start, smtp://
with credentials requires STARTTLS (credentials never cross in clear), smtp:// without them
uses STARTTLS when the server offers it. With no SMTP_URL, development logs each mail instead
(token included); production refuses to start without SMTP_URL and PUBLIC_BASE_URL while
PASSWORD_RESET_ENABLED is on, so no token ever reaches a log line there. SMTP_URL may come
from SMTP_URL_FILE.

PORT, HOST and WEB_CONCURRENCY are gunicorn's, read in gunicorn.conf.py.

GET /metrics answers a request that presents METRICS_TOKEN as its bearer token, or one that
comes straight (no X-Forwarded-For, Forwarded or X-Real-IP header) from an address in
METRICS_ALLOW; any other gets the 404 of a path that does not exist (devlab/metrics.py).
PROMETHEUS_MULTIPROC_DIR is prometheus_client's own variable: gunicorn.conf.py sets it (see
`share_metrics_between_workers`), so that every worker counts into one folder.
"""

import ipaddress
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from limits import parse_many

# Values people leave in place from examples and tutorials; never acceptable in production.
PLACEHOLDER_SECRETS = frozenset(
    {
        "change-me",
        "changeme",
        "change-me-please",
        "change-this",
        "secret",
        "secret-key",
        "jwt-secret",
        "jwt-secret-key",
        "super-secret",
        "supersecret",
        "your-secret-key",
        "password",
        "devlab",
        "test",
        "dev",
        "development",
    }
)
MIN_SECRET_BYTES = 32
RATE_LIMIT_SETTINGS = (
    "RATELIMIT_LOGIN",
    "RATELIMIT_LOGIN_FAILURES",
    "RATELIMIT_SIGNUP",
    "RATELIMIT_REFRESH",
    "RATELIMIT_PASSWORD",
    "RATELIMIT_PASSWORD_FAILURES",
    "RATELIMIT_NOTES_WRITE",
    "RATELIMIT_AUDIT_EXPORT",
    "RATELIMIT_PASSWORD_RESET",
)
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss")
LOG_FORMATS = ("text", "json")
# Who may read GET /metrics by address alone, unless METRICS_ALLOW says otherwise: this host.
DEFAULT_METRICS_ALLOW = "127.0.0.0/8,::1"
DEFAULT_PUBLIC_BASE_URL = "http://localhost:8005"
SMTP_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
# A site's address: scheme, host, optional port and path; no query or fragment (the reset link
# adds its own).
PUBLIC_BASE_URL_PATTERN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s?#]*)?")
METRICS_FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
DEV_KEY_FILENAME = "jwt-secret"
DEV_AUDIT_KEY_FILENAME = "audit-signing-key.pem"
# What a browser sends as Origin: scheme, host and an optional port; no path, no wildcard.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")

# OWASP Password Storage Cheat Sheet: argon2id settings of equal strength, as
# (iterations, KiB of memory), each with parallelism 1. Production must reach one of them.
OWASP_ARGON2ID_MINIMUMS = ((1, 47104), (2, 19456), (3, 12288), (4, 9216), (5, 7168))


class ConfigError(RuntimeError):
    """A setting is missing or unusable; the message names the variable."""


# --- start-up failures, told in one line ----------------------------------------------------
# A refused setting (ConfigError, raised while this module loads or by finalize_config) or a
# database that cannot be reached when a command starts (`make run` migrates first) stops
# `flask` and gunicorn with one line on stderr that says what to do, and exit status 1; any
# other error keeps its traceback, as a bug to report. `flask` meets these while importing the
# app (wsgi.py), outside any code that could catch them, hence an exception hook; gunicorn's
# master checks the settings before it starts workers (gunicorn.conf.py), so that a refused
# setting is one line rather than a traceback per worker. They live here, with the settings,
# because this module loads before the app and everything it imports.

START_UP_FAILURE = "DevLab cannot start: "


def start_up_failure(error: BaseException) -> str | None:
    """One line for a start-up failure a user can cause, or None for anything else."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    if isinstance(error, ConfigError):
        return START_UP_FAILURE + str(error)
    if isinstance(error, ArgumentError) and "URL" in str(error):
        return (
            START_UP_FAILURE + "DATABASE_URL is not a database URL (postgresql://user@host/name)."
        )
    if isinstance(error, OperationalError):
        return START_UP_FAILURE + _database_problem(error)
    return None


def _database_problem(error) -> str:
    """What went wrong connecting, without repeating the URL or its password."""
    from sqlalchemy.engine import make_url

    message = str(error.orig).strip() if error.orig is not None else str(error)
    try:
        configured = secret_from_env("DATABASE_URL")
    except ConfigError:
        configured = None
    url = make_url(normalize_database_url(configured or "sqlite://"))
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    if url.database and f'database "{url.database}" does not exist' in message:
        return (
            f'the database "{url.database}" does not exist on {where}: create it '
            f"(createdb {url.database}), or set DATABASE_URL to one that exists."
        )
    if "password authentication failed" in message or (
        "role" in message and "does not exist" in message
    ):
        return f"PostgreSQL at {where} refused the user or password in DATABASE_URL: check them."
    if any(sign in message for sign in ("Connection refused", "could not connect", "timeout")):
        return f"no PostgreSQL answers at {where}: start it, or set DATABASE_URL to one that runs."
    if url.get_backend_name() == "sqlite":
        return (
            f"the SQLite database cannot be opened ({message.splitlines()[0]}): check DATABASE_URL."
        )
    return f"PostgreSQL at {where} refused the connection: check DATABASE_URL."


def explain_start_up_failures() -> None:
    """From now on, an uncaught start-up failure a user can cause prints its one line."""
    default = sys.excepthook

    def hook(kind, error, traceback) -> None:
        line = start_up_failure(error)
        if line is None:
            default(kind, error, traceback)
        else:
            print(line, file=sys.stderr)

    sys.excepthook = hook


def exit_on_start_up_failure(error: BaseException) -> None:
    """For code that catches the error itself (gunicorn.conf.py): print the line and exit 1."""
    line = start_up_failure(error)
    if line is None:
        raise error
    print(line, file=sys.stderr)
    raise SystemExit(1)


# Before the settings below are read, since reading them may already refuse one.
explain_start_up_failures()


# --- gunicorn's workers count together -----------------------------------------------------
# prometheus_client keeps each process's counts in memory unless PROMETHEUS_MULTIPROC_DIR names
# a folder when it is first imported; then every process writes its counts into files there,
# and GET /metrics adds up the files of all of them. gunicorn.conf.py calls this in the master,
# before the app (and prometheus_client) is imported and before any worker is forked.
# The folder is one gunicorn instance's alone: by default a new private temporary folder
# (under TMPDIR), made when the master starts and removed when it exits. Not the instance
# folder: two instances started from one checkout (two replicas on one host, the tests) would
# share it, count each other's requests, and empty it under each other at start. A folder the
# operator names is emptied of counts when the master starts, since counts of an earlier run
# would be added to this one's. On a configuration reload (SIGHUP) the master reads
# gunicorn.conf.py again and keeps its folder: this module is not loaded again.

_metrics_folder: dict = {}


def share_metrics_between_workers() -> str:
    """Make (once per process) the folder where every worker keeps its counts; return it."""
    if "path" in _metrics_folder:
        return _metrics_folder["path"]
    configured = os.environ.get(METRICS_FOLDER_VARIABLE)
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for counts in folder.glob("*.db"):
            counts.unlink()
        _metrics_folder.update(path=str(folder), temporary=False)
    else:
        folder = tempfile.mkdtemp(prefix="devlab-metrics-")
        _metrics_folder.update(path=folder, temporary=True)
        os.environ[METRICS_FOLDER_VARIABLE] = folder
    return _metrics_folder["path"]


def remove_metrics_folder() -> None:
    """At the master's exit: remove the folder if it was a temporary one made here, and forget
    it, so that nothing this process starts afterwards counts into it."""
    if _metrics_folder.pop("temporary", False):
        shutil.rmtree(_metrics_folder["path"], ignore_errors=True)
        os.environ.pop(METRICS_FOLDER_VARIABLE, None)
    _metrics_folder.clear()


def _int_from_env(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}.")
    return value


def secret_from_env(name: str) -> str | None:
    """`name`'s value, or the content of the file that `name`_FILE names (as Docker and
    Kubernetes mount secrets), without its trailing line break; never both."""
    value, path = os.environ.get(name), os.environ.get(f"{name}_FILE")
    if not path:
        return value
    if value:
        raise ConfigError(f"Set {name} or {name}_FILE, not both.")
    try:
        return Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{name}_FILE names a file that cannot be read: {type(error).__name__}."
        ) from None


def _bool_from_env(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, not {raw!r}.")


def parse_origins(raw: str) -> list[str]:
    """The CORS allow-list from its comma-separated form; an empty list leaves CORS off."""
    origins = [origin.strip() for origin in raw.split(",") if origin.strip()]
    for origin in origins:
        if not ORIGIN.fullmatch(origin):
            raise ConfigError(
                "CORS_ORIGINS must list origins such as https://app.example.com "
                f"(scheme, host and optional port; no path or wildcard), not {origin!r}."
            )
    return origins


def normalize_database_url(url: str) -> str:
    """Map the URL forms people paste onto the psycopg2 driver.

    SQLAlchemy 2.1 would pick psycopg 3 for a bare `postgresql://` and knows no `postgres://`.
    """
    scheme, separator, rest = url.partition("://")
    if separator and scheme in ("postgres", "postgresql", "postgresql+psycopg2"):
        return f"postgresql+psycopg2://{rest}"
    return url


def is_weak_secret(secret: str | None) -> bool:
    if not secret:
        return True
    return len(secret.encode()) < MIN_SECRET_BYTES or secret.strip().lower() in PLACEHOLDER_SECRETS


def finalize_config(config: dict, instance_path: str) -> None:
    """Check the settings as a whole and derive the ones that depend on others."""
    if config["DEVLAB_ENV"] not in ("development", "production"):
        raise ConfigError(
            f"DEVLAB_ENV must be 'development' or 'production', not {config['DEVLAB_ENV']!r}."
        )
    config["SQLALCHEMY_DATABASE_URI"] = normalize_database_url(config["SQLALCHEMY_DATABASE_URI"])
    if config.get("MIGRATION_DATABASE_URL"):
        config["MIGRATION_DATABASE_URL"] = normalize_database_url(config["MIGRATION_DATABASE_URL"])
    # No pool_pre_ping: it would cost every request a SELECT 1. devlab/db_timeout.py pings only
    # connections that sat idle, and bounds every wait, so that requests fail fast while
    # PostgreSQL is away and recover when it returns.
    config["JWT_SECRET_KEY"] = resolve_jwt_secret(config, instance_path)
    config["AUDIT_SIGNING_KEY"] = resolve_audit_signing_key(config, instance_path)
    if config["DEVLAB_ENV"] == "production" and config["TEST_REQUEST_DELAY_SECONDS"]:
        raise ConfigError("DEVLAB_TEST_REQUEST_DELAY_SECONDS is for tests; production refuses it.")
    check_argon2_costs(config)
    check_hashing_concurrency(config)
    check_rate_limits(config)
    config["CORS_ORIGINS"] = parse_origins(config["CORS_ORIGINS"])
    if config["LOG_FORMAT"] not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be 'text' or 'json', not {config['LOG_FORMAT']!r}.")
    check_metrics_token(config["METRICS_TOKEN"])
    config["METRICS_ALLOW"] = parse_metrics_allow(config["METRICS_ALLOW"])
    check_mail_settings(config)


def check_argon2_costs(config: dict) -> None:
    """Refuse argon2id costs that cannot hash at all, or in production fall below OWASP's."""
    time_cost, memory_kib = config["ARGON2_TIME_COST"], config["ARGON2_MEMORY_KIB"]
    parallelism = config["ARGON2_PARALLELISM"]
    if memory_kib < 8 * parallelism:
        raise ConfigError(
            f"ARGON2_MEMORY_KIB must be at least 8 KiB per lane of ARGON2_PARALLELISM "
            f"({8 * parallelism}), not {memory_kib}."
        )
    if config["DEVLAB_ENV"] != "production":
        return
    floor = min(kib for iterations, kib in OWASP_ARGON2ID_MINIMUMS if iterations <= time_cost)
    if memory_kib < floor:
        settings = ", ".join(f"{kib} KiB with {t}" for t, kib in OWASP_ARGON2ID_MINIMUMS)
        raise ConfigError(
            f"ARGON2_MEMORY_KIB={memory_kib} with ARGON2_TIME_COST={time_cost} is below OWASP's "
            f"minimum for argon2id, which production requires: with this time cost use at least "
            f"{floor} KiB (OWASP's settings: {settings} iterations)."
        )


def check_hashing_concurrency(config: dict) -> None:
    """Refuse a hashing concurrency that could take every thread of a worker."""
    threads, concurrency = config["GUNICORN_THREADS"], config["PASSWORD_HASHING_CONCURRENCY"]
    if concurrency > max(threads - 1, 1):
        raise ConfigError(
            f"PASSWORD_HASHING_CONCURRENCY must leave one of the GUNICORN_THREADS ({threads}) "
            f"of a worker for other requests: at most {max(threads - 1, 1)}, not {concurrency}."
        )


def check_rate_limits(config: dict) -> None:
    """Refuse rate limits and a limit storage that would only fail once requests arrive."""
    for name in RATE_LIMIT_SETTINGS:
        value = config[name]
        try:
            parsed = parse_many(value) if isinstance(value, str) else []
        except ValueError:
            parsed = []
        if not parsed:
            raise ConfigError(f"{name} must be a rate such as '10 per minute', not {value!r}.")
    scheme, separator, _ = config["RATELIMIT_STORAGE_URI"].partition("://")
    if not separator or scheme not in RATE_LIMIT_STORAGE_SCHEMES:
        # The value is not repeated: a Redis URL may hold a password.
        raise ConfigError("RATELIMIT_STORAGE_URI must be memory:// or a redis:// or rediss:// URL.")


def check_metrics_token(token: str | None) -> None:
    """Refuse a METRICS_TOKEN that could be guessed: /metrics has no rate limit."""
    if token is not None and is_weak_secret(token):
        # The value is not repeated: it is a secret.
        raise ConfigError(
            f"METRICS_TOKEN must be a random value of at least {MIN_SECRET_BYTES} bytes, or unset "
            '(for example: python -c "import secrets; print(secrets.token_urlsafe(32))").'
        )


def parse_metrics_allow(raw: str) -> tuple:
    """METRICS_ALLOW's addresses and networks; `none` allows no address (the token only)."""
    if raw.strip().lower() == "none":
        return ()
    networks = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                "METRICS_ALLOW must list IP addresses or networks (127.0.0.1, 10.0.0.0/8, ::1), "
                f"or be `none`, not {entry!r}."
            ) from None
    if not networks:
        raise ConfigError("METRICS_ALLOW lists no address: set it to `none` to allow none.")
    return tuple(networks)


@dataclass(frozen=True)
class SMTPServer:
    """Where mail goes, from SMTP_URL: `smtps` is TLS from the start, `smtp` plain or STARTTLS."""

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)


def parse_smtp_url(url: str) -> SMTPServer:
    """SMTP_URL's parts; the URL is never repeated in an error, since it may hold a password."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in SMTP_DEFAULT_PORTS
        or not parts.hostname
        or port == -1
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        # Credentials come as a pair: a user and a password, or neither.
        or (
            (parts.username is not None or parts.password is not None)
            and not (parts.username and parts.password)
        )
    ):
        raise ConfigError(
            "SMTP_URL must be smtp://host[:port] or smtps://host[:port], with user:password@ "
            "before the host when the server wants a login (for example "
            "smtps://user:password@mail.example.com:465)."
        )
    return SMTPServer(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or SMTP_DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def is_local(host: str | None) -> bool:
    """Whether `host` is this machine: localhost or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_mail_settings(config: dict) -> None:
    """Parse SMTP_URL into config["SMTP"] (None: log mails), check the link's base and the
    sender, and in production demand a mail server and a public address while resets are on."""
    url, configured_base = config.get("SMTP_URL"), config.get("PUBLIC_BASE_URL")
    config["SMTP"] = parse_smtp_url(url) if url else None
    base = configured_base or DEFAULT_PUBLIC_BASE_URL
    if not PUBLIC_BASE_URL_PATTERN.fullmatch(base):
        raise ConfigError(
            "PUBLIC_BASE_URL must be the http(s) address reset links lead to, such as "
            f"https://app.example.com (no query or fragment), not {base!r}."
        )
    config["PUBLIC_BASE_URL"] = base.rstrip("/")
    sender = config.get("MAIL_FROM") or f"DevLab <noreply@{urlsplit(base).hostname}>"
    _name, address = parseaddr(sender)
    if "@" not in address or any(character in sender for character in "\r\n"):
        raise ConfigError(
            f"MAIL_FROM must be an address such as DevLab <noreply@example.com>, not {sender!r}."
        )
    config["MAIL_FROM"] = sender
    ca_file = config.get("SMTP_CA_FILE")
    if ca_file and not os.path.isfile(ca_file):
        raise ConfigError(f"SMTP_CA_FILE names no readable file: {ca_file!r}.")
    if config["DEVLAB_ENV"] == "production" and config["PASSWORD_RESET_ENABLED"]:
        link_base = urlsplit(configured_base or "")
        if configured_base and link_base.scheme != "https" and not is_local(link_base.hostname):
            raise ConfigError(
                "PUBLIC_BASE_URL must begin with https:// when DEVLAB_ENV=production (http only "
                "for localhost): a reset link opens an account to whoever reads it on the way."
            )
        missing = [
            name
            for name, value in (
                ("SMTP_URL", url),
                ("PUBLIC_BASE_URL", configured_base),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} must be set when DEVLAB_ENV=production and "
                "PASSWORD_RESET_ENABLED=1: reset links go out by mail, never to the log, and "
                "must lead to the public address (or set PASSWORD_RESET_ENABLED=0)."
            )


def resolve_jwt_secret(config: dict, instance_path: str) -> str:
    """Return the JWT signing key, or refuse to go on in production without a strong one.

    In development with no key set, one random key is generated and kept in `instance/`
    (mode 0600), so every gunicorn worker and every restart signs with the same key.
    """
    configured = config.get("JWT_SECRET_KEY")
    if config["DEVLAB_ENV"] == "production":
        if is_weak_secret(configured):
            raise ConfigError(
                "JWT_SECRET_KEY must be set to a random value of at least "
                f"{MIN_SECRET_BYTES} bytes when DEVLAB_ENV=production "
                '(for example: python -c "import secrets; print(secrets.token_urlsafe(48))").'
            )
        return configured
    if configured:
        return configured
    return _shared_development_secret(Path(instance_path))


def resolve_audit_signing_key(config: dict, instance_path: str) -> str:
    """Return the PEM of the Ed25519 key that signs the audit trail's heads.

    AUDIT_SIGNING_KEY holds the PEM (PKCS#8) itself or the path of a file holding it; production
    refuses to start without one. In development one is generated into `instance/` (mode 0600)
    like the JWT key. Anything but an unencrypted Ed25519 private key is refused at start.
    """
    configured = (config.get("AUDIT_SIGNING_KEY") or "").strip()
    if not configured:
        if config["DEVLAB_ENV"] == "production":
            raise ConfigError(
                "AUDIT_SIGNING_KEY must be set when DEVLAB_ENV=production: an Ed25519 private "
                "key in PEM (PKCS#8), or the path of a file holding one (for example: "
                "openssl genpkey -algorithm ed25519 -out audit-signing-key.pem)."
            )
        return _shared_development_file(
            Path(instance_path), DEV_AUDIT_KEY_FILENAME, _new_ed25519_pem
        )
    if configured.startswith("-----BEGIN"):
        pem = configured
    else:
        try:
            pem = Path(configured).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"AUDIT_SIGNING_KEY names a file that cannot be read: {type(error).__name__}."
            ) from None
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        # The value is not repeated: it is a secret.
        raise ConfigError("AUDIT_SIGNING_KEY must be an unencrypted Ed25519 private key in PEM.")
    return pem


def _new_ed25519_pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )


def _new_jwt_secret() -> str:
    return secrets.token_urlsafe(48)


def _shared_development_secret(instance_dir: Path) -> str:
    return _shared_development_file(instance_dir, DEV_KEY_FILENAME, _new_jwt_secret).strip()


def _shared_development_file(instance_dir: Path, filename: str, make: Callable[[], str]) -> str:
    """The content of `instance_dir/filename` (mode 0600), made once by whichever process of
    the app gets there first: every gunicorn worker and every restart reads the same key."""
    secret_file = instance_dir / filename
    if not secret_file.exists():
        instance_dir.mkdir(parents=True, exist_ok=True)
        draft = instance_dir / f".{filename}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
        try:
            # link() fails if another worker won the race; everybody then reads the winner's key.
            os.link(draft, secret_file)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return secret_file.read_text()


class Config:
    # Read before the app exists: create_app() hands it to Flask (None: Flask's instance/).
    INSTANCE_PATH = os.environ.get("DEVLAB_INSTANCE_PATH") or None
    DEVLAB_ENV = os.environ.get("DEVLAB_ENV", "development").strip().lower()

    SQLALCHEMY_DATABASE_URI = normalize_database_url(
        secret_from_env("DATABASE_URL") or "sqlite:///devlab.db"
    )
    # Migrations run as the tables' owner, straight to PostgreSQL (not through PgBouncer); the
    # app as a role that owns nothing (`flask grant-app-role`). Unset: DATABASE_URL.
    MIGRATION_DATABASE_URL = secret_from_env("MIGRATION_DATABASE_URL") or None
    DATABASE_TIMEOUT_SECONDS = _int_from_env("DATABASE_TIMEOUT_SECONDS", 2, minimum=1)

    JWT_SECRET_KEY = secret_from_env("JWT_SECRET_KEY")
    # The PEM itself or its file's path; config.finalize_config reads and checks it.
    AUDIT_SIGNING_KEY = secret_from_env("AUDIT_SIGNING_KEY")
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(
        minutes=_int_from_env("JWT_ACCESS_TOKEN_MINUTES", 15, minimum=1)
    )
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(
        days=_int_from_env("JWT_REFRESH_TOKEN_DAYS", 14, minimum=1)
    )
    # However often it is refreshed, a login ends this long after it began.
    JWT_SESSION_MAX = timedelta(days=_int_from_env("JWT_SESSION_MAX_DAYS", 30, minimum=1))
    # The refresh token used last, presented again this soon, is a retry or a race between a
    # client's tabs: refused, without revoking the login as a replay of an older one would.
    JWT_REFRESH_REUSE_GRACE_SECONDS = _int_from_env("JWT_REFRESH_REUSE_GRACE_SECONDS", 10)
    JWT_ALGORITHM = "HS256"
    JWT_DECODE_ALGORITHMS = ["HS256"]
    JWT_TOKEN_LOCATION = ["headers"]
    JWT_COOKIE_CSRF_PROTECT = False  # tokens travel only in headers, so no csrf claim

    TRUSTED_PROXY_HOPS = _int_from_env("TRUSTED_PROXY_HOPS", 0)

    FORCE_HTTPS = _bool_from_env("FORCE_HTTPS", False)
    CORS_ORIGINS = os.environ.get("CORS_ORIGINS", "")

    # argon2id costs; the defaults (RFC 9106's second recommendation) exceed OWASP's minimums.
    ARGON2_TIME_COST = _int_from_env("ARGON2_TIME_COST", 3, minimum=1)
    ARGON2_MEMORY_KIB = _int_from_env("ARGON2_MEMORY_KIB", 65536, minimum=8)
    ARGON2_PARALLELISM = _int_from_env("ARGON2_PARALLELISM", 4, minimum=1)

    # Threads per worker: gunicorn.conf.py serves with this many, and the hashing bound keeps
    # one of them free for other requests.
    GUNICORN_THREADS = _int_from_env("GUNICORN_THREADS", 4, minimum=1)
    # On SIGTERM gunicorn stops accepting and lets requests in flight finish for this long.
    GRACEFUL_TIMEOUT_SECONDS = _int_from_env("GRACEFUL_TIMEOUT_SECONDS", 20, minimum=1)
    # Tests only: requests carrying `X-Test-Delay: 1` wait this long first, so that a test can
    # stop a server while one is in flight. Refused in production (finalize_config).
    TEST_REQUEST_DELAY_SECONDS = _int_from_env("DEVLAB_TEST_REQUEST_DELAY_SECONDS", 0)
    # One hash's lanes (ARGON2_PARALLELISM threads of their own, outside the GIL) already fill
    # 2 cores, so more at once add latency and memory rather than throughput; bench/run.py
    # measures GET /notes while logins flood in.
    PASSWORD_HASHING_CONCURRENCY = _int_from_env("PASSWORD_HASHING_CONCURRENCY", 1, minimum=1)
    # A request that has waited this long for a hashing slot answers 503 with Retry-After.
    PASSWORD_HASHING_WAIT_SECONDS = 5

    # Flask-Limiter reads RATELIMIT_ENABLED, RATELIMIT_STORAGE_URI and RATELIMIT_STORAGE_OPTIONS;
    # devlab/ratelimit.py reads the limits themselves, and the same storage settings.
    RATELIMIT_ENABLED = _bool_from_env("RATELIMIT_ENABLED", True)
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI") or "memory://"
    # A Redis that stops answering must not hold requests up: give up after a second (and
    # count in memory meanwhile, see devlab/ratelimit.py). memory:// ignores these options.
    RATELIMIT_STORAGE_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 1}
    RATELIMIT_LOGIN = os.environ.get("RATELIMIT_LOGIN") or "10 per minute"
    RATELIMIT_LOGIN_FAILURES = os.environ.get("RATELIMIT_LOGIN_FAILURES") or "5 per 15 minutes"
    RATELIMIT_SIGNUP = os.environ.get("RATELIMIT_SIGNUP") or "10 per minute"
    RATELIMIT_REFRESH = os.environ.get("RATELIMIT_REFRESH") or "10 per minute"
    RATELIMIT_PASSWORD = os.environ.get("RATELIMIT_PASSWORD") or "10 per minute"
    RATELIMIT_PASSWORD_FAILURES = (
        os.environ.get("RATELIMIT_PASSWORD_FAILURES") or "5 per 15 minutes"
    )
    RATELIMIT_NOTES_WRITE = os.environ.get("RATELIMIT_NOTES_WRITE") or "120 per minute"
    RATELIMIT_AUDIT_EXPORT = os.environ.get("RATELIMIT_AUDIT_EXPORT") or "10 per hour"
    # Per address on /password/forgot and /password/reset, and per typed email on the first.
    RATELIMIT_PASSWORD_RESET = os.environ.get("RATELIMIT_PASSWORD_RESET") or "5 per hour"

    # Password reset by email (devlab/auth/reset_links.py, devlab/mail.py); check_mail_settings
    # checks these and parses SMTP_URL into SMTP.
    PASSWORD_RESET_ENABLED = _bool_from_env("PASSWORD_RESET_ENABLED", True)
    PASSWORD_RESET_MINUTES = _int_from_env("PASSWORD_RESET_MINUTES", 30, minimum=1)
    SMTP_URL = secret_from_env("SMTP_URL") or None
    SMTP_CA_FILE = os.environ.get("SMTP_CA_FILE") or None
    MAIL_FROM = os.environ.get("MAIL_FROM") or None
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL") or None

    # `text` (Flask's and gunicorn's lines, with the request id) or `json` (one object per line
    # on stdout, devlab/logs.py); the Docker image sets json.
    LOG_FORMAT = (os.environ.get("LOG_FORMAT") or "text").strip().lower()
    # GET /metrics (devlab/metrics.py): a bearer token that may read it from anywhere, and the
    # addresses that may read it without one; finalize_config checks and parses both.
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
    METRICS_ALLOW = os.environ.get("METRICS_ALLOW") or DEFAULT_METRICS_ALLOW

    MAX_CONTENT_LENGTH = 1024 * 1024

    API_TITLE = "DevLab API"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    OPENAPI_SWAGGER_UI_PATH = "/docs"
    OPENAPI_SWAGGER_UI_URL = "/docs/assets/"
    # Authorize once: Swagger UI keeps the token across reloads of /docs.
    OPENAPI_SWAGGER_UI_CONFIG = {"persistAuthorization": True}
    API_SPEC_OPTIONS = {
        "info": {
            "description": (
                "Sign up, log in for a bearer token, keep your own notes. "
                "Administrators manage users and read the audit trail. "
                "Use **Authorize** with your username and password (or paste a token). "
                "Where an operation takes query parameters or a body, any parameter or field "
                "it does not list is refused with 422."
            )
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "passwordLogin": {
                    "type": "oauth2",
                    "flows": {"password": {"tokenUrl": "/login", "scopes": {}}},
                },
            }
        },
    }
