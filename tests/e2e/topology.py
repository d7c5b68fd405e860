"""DevLab's production topology on loopback, from real programs: nginx (Debian's, with
deploy/nginx/devlab.conf) in front of two gunicorn instances of DevLab, which share one
PostgreSQL database through PgBouncer (Debian's, in transaction pooling mode, with
deploy/pgbouncer/pgbouncer.ini) and one Redis.

Every port is a free one, every file lives in folders of the run's own, and every process runs in
a process group of its own that is killed on the way out, whatever happened; a process also dies
with the test run that started it. nginx and PgBouncer run from temporary configuration files, as
the user running the tests; PgBouncer refuses to run as root, so under root (CI) it runs as
`nobody`. nginx runs as a single process (scripts/nginx_loopback.py says why).
"""

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from psycopg2 import sql
from sqlalchemy.engine import URL, make_url

from scripts.nginx_loopback import make_certificate, nginx_binary, write_config
from tests.servers import BIN, PROJECT, clean_env, free_port

PGBOUNCER_INI = PROJECT / "deploy" / "pgbouncer" / "pgbouncer.ini"
START_WITHIN_SECONDS = 60
LOGGED_WITHIN_SECONDS = 5
# A host name in the certificate and nginx's server_name.
HOST = "localhost"
PR_SET_PDEATHSIG = 1


def _die_with_the_test_run() -> None:
    """In the child before exec: be killed when the process that started it dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError("pgbouncer not found: `make e2e` installs Debian's.")
    return found


class Process:
    """A program in a process group of its own, its output in `log`."""

    def __init__(self, name: str, argv: list, log: Path, *, user: str | None = None, **popen):
        self.name, self.log = name, log
        as_user = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with log.open("ab") as output:
            self.popen = subprocess.Popen(
                [str(arg) for arg in argv],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_the_test_run,
                **as_user,
                **popen,
            )

    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group, as when a machine or container dies."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to whatever of the group is left after 10 s."""
        self._signal_group(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # workers that outlived their master, if any
        self.popen.wait(timeout=10)

    def _signal_group(self, signum: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_until(ready, process: Process, what: str) -> None:
    deadline = time.monotonic() + START_WITHIN_SECONDS
    while not ready():
        assert process.running(), f"{what} exited\n{process.tail()}"
        assert time.monotonic() < deadline, f"{what} not ready\n{process.tail()}"
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback)
            return True
    except OSError:
        return False


@dataclass
class Instance:
    """One gunicorn of DevLab: its name, port and process (None while stopped)."""

    name: str
    port: int
    log: Path
    env: dict
    process: Process | None = None

    def start(self) -> Process:
        self.process = Process(
            self.name,
            [BIN / "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
            self.log,
            cwd=PROJECT,
            env=self.env | {"PORT": str(self.port)},
        )
        return self.process

    def wait_until_ready(self) -> None:
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{self.port}/health"), self.process, self.name
        )

    def served(self, request_id: str) -> bool:
        """Whether this instance's access log has a line of the request with this id."""
        return f"request_id={request_id}\n" in self.log.read_text(errors="replace")


@dataclass
class Topology:
    https_port: int
    http_port: int
    pgbouncer_port: int
    database_url: URL  # straight to PostgreSQL, for what the tests look at
    pooled_url: URL  # through PgBouncer, as DevLab connects
    instances: list[Instance]
    tls_dir: Path
    processes: list[Process]
    nginx_access_log: Path

    def instance_that_served(self, request_id: str) -> list[str]:
        """The instances whose access log has the request (one, or none if nginx answered)."""
        return (
            _once_logged(
                lambda: (
                    [instance.name for instance in self.instances if instance.served(request_id)]
                    or None
                )
            )
            or []
        )

    def instances_tried(self, request_id: str) -> list[str]:
        """The instances nginx tried for a request, in order, from its access log ("-": none)."""
        names = {f"127.0.0.1:{instance.port}": instance.name for instance in self.instances}

        def tried() -> list[str] | None:
            for line in self.nginx_access_log.read_text().splitlines():
                if f" {request_id} upstream=" in line:
                    addresses = line.split(" upstream=", 1)[1].split(",")
                    return [names.get(address.strip(), address.strip()) for address in addresses]
            return None

        found = _once_logged(tried)
        assert found is not None, f"{request_id} is not in nginx's access log"
        return found

    def logs(self) -> str:
        return "\n".join(process.tail() for process in self.processes)


def _once_logged(look, within: float = LOGGED_WITHIN_SECONDS):
    """What `look` finds, asked again until it finds something or `within` runs out: gunicorn
    and nginx write a request's access line after its answer, so the client may be faster."""
    deadline = time.monotonic() + within
    while (found := look()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _database_url() -> URL:
    """E2E_DATABASE_URL, by default `devlab_e2e` on TEST_DATABASE_URL's server."""
    from tests.conftest import TEST_DATABASE_URL

    configured = os.environ.get("E2E_DATABASE_URL")
    if configured:
        return make_url(configured).set(drivername="postgresql")
    return make_url(TEST_DATABASE_URL).set(drivername="postgresql", database="devlab_e2e")


def connect(url: URL, **changes) -> psycopg2.extensions.connection:
    """A psycopg2 connection to `url`, with `changes` to it (another database, say)."""
    url = url.set(**changes)
    return psycopg2.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        connect_timeout=5,
    )


@contextmanager
def fresh_database(url: URL):
    """The database of `url`, created anew (an earlier run's is dropped); dropped at the end."""
    admin = connect(url, database="postgres")
    admin.autocommit = True
    name = sql.Identifier(url.database)
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(name))
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.close()


def _run_migrations(url: URL, logs: Path) -> None:
    """`flask db upgrade`, straight to PostgreSQL as migrations are run in production."""
    result = subprocess.run(
        [BIN / "flask", "db", "upgrade"],
        cwd=PROJECT,
        env=clean_env(DATABASE_URL=url.render_as_string(hide_password=False)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    (logs / "migrations.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr


def _quoted(value: str) -> str:
    """A value of PgBouncer's auth_file: in double quotes, a double quote inside doubled."""
    return '"' + value.replace('"', '""') + '"'


def _start_pgbouncer(stack: ExitStack, folder: Path, logs: Path, target: URL, password: str):
    """PgBouncer on a free port with the repository's settings, for the database of `target`.

    Our [databases] line comes first, the repository's file next, and our own addresses and
    files last, inside its final [pgbouncer] section (a second [pgbouncer] header would reset
    every setting of the first). Clients log in with `password` (SCRAM, as in the file); so
    does PgBouncer to PostgreSQL, which trusts loopback or knows that password.
    """
    port = free_port()
    users = folder / "userlist.txt"
    users.write_text(f"{_quoted(target.username)} {_quoted(password)}\n")
    server = f"host={target.host or '127.0.0.1'} port={target.port or 5432}"
    # A copy beside the rest: `nobody` may not be allowed into the checkout's folders.
    repository_ini = folder / "repository-pgbouncer.ini"
    shutil.copyfile(PGBOUNCER_INI, repository_ini)
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{target.database} = {server} dbname={target.database}
%include {repository_ini}
listen_addr = 127.0.0.1
listen_port = {port}
auth_file = {users}
logfile =
pidfile =
"""
    )
    user = None
    if os.geteuid() == 0:
        user = "nobody"
        entry = pwd.getpwnam(user)
        for path in (folder, repository_ini, ini, users):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        users.chmod(0o600)
    process = Process("pgbouncer", [pgbouncer_binary(), ini], logs / "pgbouncer.log", user=user)
    stack.callback(process.stop)
    pooled = target.set(host="127.0.0.1", port=port, password=password)

    def answers() -> bool:
        try:
            connect(pooled).close()
            return True
        except psycopg2.OperationalError:
            return False

    wait_until(answers, process, "pgbouncer")
    return process, pooled


def _instance_settings(pooled: URL, redis_url: str) -> dict:
    """What both instances share: the database through PgBouncer, the Redis, the keys."""
    audit_key = (
        Ed25519PrivateKey.generate()
        .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        .decode("ascii")
    )
    return clean_env(
        DEVLAB_ENV="production",
        DATABASE_URL=pooled.render_as_string(hide_password=False),
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        AUDIT_SIGNING_KEY=audit_key,
        # OWASP's cheapest argon2id setting that production accepts: logins take milliseconds.
        ARGON2_TIME_COST="2",
        ARGON2_MEMORY_KIB="19456",
        ARGON2_PARALLELISM="1",
        TRUSTED_PROXY_HOPS="1",
        FORCE_HTTPS="1",
        # No test here asks for a reset link (tests/test_password_reset.py mails them through a
        # real SMTP server), but production starts only with somewhere to send them.
        SMTP_URL="smtp://127.0.0.1:25",
        PUBLIC_BASE_URL="https://devlab.test",
        RATELIMIT_ENABLED="1",
        RATELIMIT_STORAGE_URI=redis_url,
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="4",
        HOST="127.0.0.1",
    )


def _start_nginx(stack: ExitStack, folder: Path, logs: Path, upstream_ports: list[int]):
    tls_dir = folder / "tls"
    make_certificate(tls_dir, HOST)
    http_port, https_port = free_port(), free_port()
    main = write_config(
        folder,
        http_port=http_port,
        https_port=https_port,
        upstream_ports=upstream_ports,
        tls_dir=tls_dir,
        logs=logs,
    )
    argv = [nginx_binary(), "-p", folder, "-e", logs / "nginx-error.log", "-c", main]
    argv += ["-g", "daemon off;"]
    process = Process("nginx", argv, logs / "nginx.log")
    stack.callback(process.stop)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(listening, process, "nginx")
    return process, http_port, https_port, tls_dir


@contextmanager
def running_topology(logs: Path, redis_url: str):
    """Start everything; yield the Topology; stop everything, in reverse order, at the end."""
    with ExitStack() as stack:
        target = stack.enter_context(fresh_database(_database_url()))
        _run_migrations(target, logs)
        # Readable by PgBouncer's and nginx's unprivileged users; removed at the end.
        folder = Path(tempfile.mkdtemp(prefix="devlab-topology-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        folder.chmod(0o755)
        pgbouncer, pooled = _start_pgbouncer(
            stack, folder, logs, target, target.password or secrets.token_urlsafe(16)
        )
        settings = _instance_settings(pooled, redis_url)
        instances = [
            Instance(name, free_port(), logs / f"{name}.log", settings) for name in ("api1", "api2")
        ]
        for instance in instances:  # both start at once, as replicas do
            instance.start()
            stack.callback(lambda instance=instance: instance.process.stop())
        for instance in instances:
            instance.wait_until_ready()
        nginx, http_port, https_port, tls_dir = _start_nginx(
            stack, folder, logs, [instance.port for instance in instances]
        )
        yield Topology(
            https_port=https_port,
            http_port=http_port,
            pgbouncer_port=pooled.port,
            database_url=target,
            pooled_url=pooled,
            instances=instances,
            tls_dir=tls_dir,
            processes=[pgbouncer, *(i.process for i in instances), nginx],
            nginx_access_log=logs / "nginx-access.log",
        )
