"""`make bench`: DevLab's throughput and cost per request, against references, in one sitting.

Sides, each under its own server, all on one seeded database:

    A  DevLab as `make run` serves it (gunicorn.conf.py), RATELIMIT_ENABLED=0
    B  bench/reference_app.py: hand-written Flask doing the same work, same gunicorn settings
    C  bench/fastapi_reference.py: FastAPI on uvicorn[standard], 2 workers (bench/.venv)

Steps: install wrk (Debian) if missing; create the database BENCH_DATABASE (default
`devlab_bench`, on the PostgreSQL server of TEST_DATABASE_URL), migrate it and seed it with SQL
(1,000 users, 100,000 notes, 10,000 audit rows), and a second one alike, then grow the first's
trail to 1,000,000 rows; read the trail at both sizes and export the large one, on DevLab
servers of their own that stop before the load (bench/audit_reading.py); start the three
servers; run BENCH_ROUNDS rounds (default 3) in which every endpoint the three sides have is
loaded for BENCH_DURATION seconds (default 4) by wrk (2 threads, 32 connections) on each side
in turn, A, B, C, A, B, C..., then A's own endpoints (GET /audit/logs, POST /login) once, each
load once the servers and PostgreSQL are idle again (`settle`); then measure GET /notes on A
idle and under a login flood of 16 clients for FLOOD_SECONDS (15), with the logins that
succeeded and were refused meanwhile; count the SQL statements per request in-process; print
the table and write it to bench/RESULTS.md between its markers. Servers are stopped and the
database dropped at the end, also on Ctrl-C or SIGTERM.

CPU per request comes from /proc: the server's worker processes, and every PostgreSQL
process (with the postmaster's reaped children), before and after each load. Absolute figures
on a shared machine move by ±30 % between runs; compare the ratios of one run.
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
from argon2 import PasswordHasher
from psycopg2 import errors, sql
from sqlalchemy.engine import make_url

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench import audit_reading  # noqa: E402
from config import Config, normalize_database_url  # noqa: E402

BIN = Path(sys.executable).parent
BENCH_BIN = PROJECT / "bench" / ".venv" / "bin"
RESULTS = PROJECT / "bench" / "RESULTS.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
DURATION = int(os.environ.get("BENCH_DURATION") or 4)
ROUNDS = int(os.environ.get("BENCH_ROUNDS") or 3)
CONNECTIONS = 32
FLOOD_SECONDS = 15
SETTLE_SECONDS = 5
PASSWORD = "bench password, not a secret"  # bench/post_login.lua sends it too
JWT_KEY = "bench-signing-key-that-is-long-enough-for-hs256"
TICKS = os.sysconf("SC_CLK_TCK")

# The reader (user1, an admin) keeps its 100 seeded notes for the whole run: the notes that
# POST /notes adds (thousands per round) go to the writer, user2. Were they the reader's,
# every round of GET /notes would count more of them than the one before, and the later
# rounds would measure PostgreSQL more than the servers.
READER, WRITER = "user1", "user2"

# endpoint: (method, path, wrk script, connections, sides, user)
ENDPOINTS = {
    "GET /notes": ("GET", "/notes", None, CONNECTIONS, "ABC", READER),
    "POST /notes": ("POST", "/notes", "post_note.lua", CONNECTIONS, "ABC", WRITER),
    "GET /me": ("GET", "/me", None, CONNECTIONS, "ABC", READER),
    "GET /audit/logs": ("GET", "/audit/logs", None, CONNECTIONS, "A", READER),
    # argon2id at the default costs: a few connections already keep both cores busy.
    "POST /login": ("POST", "/login", "post_login.lua", 4, "A", READER),
}


def main() -> int:
    ensure_wrk()
    url = bench_database_url()
    stack = ExitStack()
    signal.signal(signal.SIGTERM, _interrupted)
    began = time.monotonic()
    try:
        with stack:
            stack.enter_context(fresh_database(url))
            small_url = small_database_url(url)
            stack.enter_context(fresh_database(small_url))
            trail = seed(url)
            seed(small_url, trail["start"])
            grow_trail(url, trail)
            # The trail is read and exported on a DevLab server of its own, stopped before the
            # load rounds: a million rows exported leave a worker's heap larger (RSS 136 to
            # 158 MB) and its later requests slower, which is the export's cost, not A's.
            with devlab_server(url) as trail_side:
                token = log_in(trail_side.base, READER)
                reading = read_the_trail(small_url, trail_side, token, trail)
            sides = {
                "A": stack.enter_context(devlab_server(url)),
                "B": stack.enter_context(reference_server(url)),
                "C": stack.enter_context(fastapi_server(url)),
            }
            tokens = {user: log_in(sides["A"].base, user) for user in (READER, WRITER)}
            results = load_rounds(sides, tokens)
            flood = login_flood(sides["A"], tokens[READER])
            counts = statement_counts(url, tokens)
            rss = {name: side.worker_rss_mb() for name, side in sides.items()}
            # Before the clean-up: dropping the database waits for a checkpoint, which can
            # take minutes on a busy disk.
            report(url, results, flood, counts, rss, reading)
            print("make bench: stopping the servers, dropping the database", file=sys.stderr)
    except KeyboardInterrupt:
        print("make bench: interrupted; servers stopped, database dropped", file=sys.stderr)
        return 130
    print(f"make bench: done in {time.monotonic() - began:.0f} s", file=sys.stderr)
    return 0


def _interrupted(_signum, _frame):
    raise KeyboardInterrupt


# --- set-up -------------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("make bench: installing wrk from Debian's archive", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def bench_database_url():
    test_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/x")
    name = os.environ.get("BENCH_DATABASE", "devlab_bench")
    return make_url(normalize_database_url(test_url)).set(database=name)


def small_database_url(url):
    """The database of the audit trail at audit_reading.SMALL rows, beside the bench's own."""
    name = os.environ.get("BENCH_SMALL_DATABASE") or f"{url.database}_small"
    return url.set(database=name)


def connect(url, database=None):
    return psycopg2.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=database or url.database,
    )


@contextmanager
def fresh_database(url):
    def run(statement: str) -> None:
        admin = connect(url, "postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL(statement).format(sql.Identifier(url.database)))
        admin.close()

    def drop():
        run("DROP DATABASE IF EXISTS {} WITH (FORCE)")

    drop()
    run("CREATE DATABASE {}")
    try:
        env = server_env(url)
        subprocess.run(
            [BIN / "flask", "db", "upgrade"], cwd=PROJECT, env=env, check=True, capture_output=True
        )
        yield
    finally:
        drop()


def seed(url, trail_start: datetime | None = None) -> dict:
    """1,000 users (user1 an admin, all with PASSWORD), 100 notes each, and the first
    audit_reading.SMALL rows of the audit trail (the same in every database seeded from the
    same `trail_start`); `grow_trail` adds the rest."""
    hashed = PasswordHasher(
        time_cost=Config.ARGON2_TIME_COST,
        memory_cost=Config.ARGON2_MEMORY_KIB,
        parallelism=Config.ARGON2_PARALLELISM,
    ).hash(PASSWORD)
    started = time.monotonic()
    trail = {"start": trail_start or audit_reading.trail_start()}
    connection = connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (username, email, hashed_password, is_admin) "
            "SELECT 'user' || i, 'user' || i || '@example.com', %s, i = 1 "
            "FROM generate_series(1, 1000) AS i",
            (hashed,),
        )
        cursor.execute(
            "INSERT INTO notes (owner_id, text, created_at, updated_at) "
            "SELECT u.id, 'seeded note ' || n, now() - n * interval '1 minute', "
            "now() - n * interval '1 minute' FROM users AS u, generate_series(1, 100) AS n"
        )
    trail["small"] = audit_reading.seed_trail(connection, 1, audit_reading.SMALL, trail["start"])
    _vacuum(connection)
    print(f"make bench: seeded in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return trail


def grow_trail(url, trail: dict) -> None:
    """The audit trail from audit_reading.SMALL rows to audit_reading.LARGE; then a checkpoint,
    so that writing out a million rows does not slow what is measured next."""
    connection = connect(url)
    first, last = audit_reading.SMALL + 1, audit_reading.LARGE
    trail["large"] = audit_reading.seed_trail(connection, first, last, trail["start"])
    _vacuum(connection, checkpoint=True)
    print(
        f"make bench: {last - first + 1:,} audit rows seeded in {trail['large']:.1f} s",
        file=sys.stderr,
    )


def _vacuum(connection, *, checkpoint: bool = False) -> None:
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        # A role without pg_checkpoint leaves it to the checkpointer, in its own time.
        if checkpoint:
            with suppress(errors.InsufficientPrivilege):
                cursor.execute("CHECKPOINT")
    connection.close()


def server_env(url, **settings) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DEVLAB_", "DATABASE_", "JWT_", "RATELIMIT_", "FLASK_"))
    }
    return env | {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "JWT_SECRET_KEY": JWT_KEY,
        "RATELIMIT_ENABLED": "0",
        "FLASK_APP": "wsgi",
        "FLASK_SKIP_DOTENV": "1",
        "DEVLAB_INSTANCE_PATH": tempfile.mkdtemp(prefix="devlab-bench-"),
        "PYTHONPATH": str(PROJECT),
        **settings,
    }


# --- servers ------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, command: list, env: dict, port: int) -> None:
        self.name, self.base = name, f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/notes", timeout=2):  # noqa: S310
                    break
            except urllib.error.HTTPError:
                break  # answering (401 without a token)
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{Path(self.log.name).read_text()}")
            time.sleep(0.2)

    def workers(self) -> list[int]:
        """The worker processes (gunicorn's, or uvicorn's, without multiprocessing's helper)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()]
        return [pid for pid in pids if b"resource_tracker" not in _cmdline(pid)]

    def cpu_ticks(self) -> int:
        return sum(_ticks(pid) for pid in self.workers())

    def worker_rss_mb(self) -> float:
        sizes = []
        for pid in self.workers():
            status = Path(f"/proc/{pid}/status").read_text()
            sizes.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
        return statistics.mean(sizes)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ticks(pid: int, *, children: bool = False) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    own = int(fields[11]) + int(fields[12])  # utime, stime
    return own + (int(fields[13]) + int(fields[14]) if children else 0)


def postgres_ticks() -> int:
    """CPU of every PostgreSQL process, and of those its postmaster has reaped."""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _comm(int(entry.name)).startswith("postgres"):
            total += _ticks(int(entry.name), children=True)
    return total


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(name: str, command: list, env: dict, port: int):
    server = Server(name, command, env, port)
    try:
        yield server
    finally:
        server.stop()


def devlab_server(url):
    port = free_port()
    env = server_env(url, PORT=str(port))
    return serving("A", [BIN / "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"], env, port)


def reference_server(url):
    port = free_port()
    env = server_env(url, PORT=str(port))
    command = [BIN / "gunicorn", "--config", "gunicorn.conf.py", "bench.reference_app:app"]
    return serving("B", command, env, port)


def fastapi_server(url):
    port = free_port()
    env = server_env(url)
    command = [
        BENCH_BIN / "uvicorn",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "bench.fastapi_reference:app",
    ]
    return serving("C", command, env, port)


def log_in(base: str, username: str) -> str:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        base + "/login",
        data=json.dumps({"username": username, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())["access_token"]


# --- load ---------------------------------------------------------------------------------


def wrk(base: str, path: str, token: str, script: str | None, connections: int, seconds: float):
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        # wrk leaves a request that takes longer than its timeout (2 s by default) out of the
        # latency figures: a starved endpoint would show a p99 of 0.
        "--timeout",
        "30s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
    ]
    if script:
        command += ["-s", str(PROJECT / "bench" / script)]
    output = subprocess.run(
        [*command, base + path], capture_output=True, text=True, check=True
    ).stdout
    return wrk_results(output)


def wrk_results(output: str) -> dict:
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": _latency(output, "50%"),
        "p99": _latency(output, "99%"),
        "errors": int(m.group(1))
        if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output))
        else 0,
    }


def _latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)\b", output).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def measured(side: Server, path, token, script, connections, seconds) -> dict:
    app_before, pg_before = side.cpu_ticks(), postgres_ticks()
    result = wrk(side.base, path, token, script, connections, seconds)
    app_ms = (side.cpu_ticks() - app_before) * 1000 / TICKS
    pg_ms = (postgres_ticks() - pg_before) * 1000 / TICKS
    result["app_cpu"] = app_ms / max(result["requests"], 1)
    result["pg_cpu"] = pg_ms / max(result["requests"], 1)
    return result


def load_rounds(sides: dict, tokens: dict) -> dict:
    """ROUNDS interleaved rounds of the endpoints every side has; then, once, those only A has
    (the trail's first page, logins), whose work outlasts their load by seconds."""
    results = {}
    for _method, path, script, connections, names, user in ENDPOINTS.values():
        for name in names:  # warm up: connections, caches, JIT-free but lazy imports
            wrk(sides[name].base, path, tokens[user], script, connections, 1)
    steps = [
        (round_number, endpoint, name)
        for round_number in range(ROUNDS)
        for endpoint, (*_, names, _user) in ENDPOINTS.items()
        if len(names) > 1
        for name in names
    ]
    steps += [
        (ROUNDS - 1, endpoint, "A")
        for endpoint, (*_, names, _u) in ENDPOINTS.items()
        if names == "A"
    ]
    for round_number, endpoint, name in steps:
        _method, path, script, connections, _names, user = ENDPOINTS[endpoint]
        print(f"make bench: round {round_number + 1}, {endpoint} on {name}", file=sys.stderr)
        settle(sides.values())
        result = measured(sides[name], path, tokens[user], script, connections, DURATION)
        results.setdefault((endpoint, name), []).append(result)
    return results


def settle(sides, *, at_most: float = SETTLE_SECONDS) -> None:
    """Wait until the work of the last load step is over: requests still running when wrk
    stopped (a page of the trail takes seconds, a login queues for hashing) would otherwise
    take their CPU, threads and PostgreSQL from the next step, and be counted in it. Over when
    the servers and PostgreSQL together spend at most one tick in a quarter of a second."""
    deadline = time.monotonic() + at_most
    while time.monotonic() < deadline:
        before = sum(side.cpu_ticks() for side in sides) + postgres_ticks()
        time.sleep(0.25)
        if sum(side.cpu_ticks() for side in sides) + postgres_ticks() - before <= 1:
            return


def login_flood(side: Server, token: str) -> dict:
    """GET /notes p99 (4 connections) idle, then while 16 clients log in as fast as they can for
    FLOOD_SECONDS (issue 8), and how many of those logins succeeded or were refused."""
    settle([side])
    idle = wrk(side.base, "/notes", token, None, 4, FLOOD_SECONDS - 4)
    flood = subprocess.Popen(
        [
            "wrk",
            "-t2",
            "-c16",
            f"-d{FLOOD_SECONDS}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(PROJECT / "bench" / "post_login.lua"),
            side.base + "/login",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
        loaded = wrk(side.base, "/notes", token, None, 4, FLOOD_SECONDS - 4)
    finally:
        logins = wrk_results(flood.communicate(timeout=FLOOD_SECONDS + 30)[0])
    return {
        "idle_p99": idle["p99"],
        "flood_p99": loaded["p99"],
        "flood_rps": loaded["rps"],
        "logins_ok_rps": (logins["requests"] - logins["errors"]) / FLOOD_SECONDS,
        "logins_refused": logins["errors"],
    }


# --- reading the audit trail (bench/audit_reading.py) ------------------------------------------


def read_the_trail(small_url, side: Server, token: str, trail: dict) -> list[str]:
    """The audit calls on `side` (LARGE rows) and on a DevLab server of its own on the
    database at `small_url` (SMALL rows), request by request in turn, so that both sizes
    meet the same machine; then the export of all LARGE rows: the lines of the report."""
    connection = connect(small_url)
    calls = audit_reading.calls(connection, trail["start"])
    connection.close()
    began = time.monotonic()
    with devlab_server(small_url) as small_side:
        small_token = log_in(small_side.base, READER)
        small, large = audit_reading.measure(
            (small_side.base, small_token), (side.base, token), calls
        )
    print(f"make bench: the audit trail read in {time.monotonic() - began:.1f} s", file=sys.stderr)
    export = audit_reading.export_growth(side.base, token, side.workers())
    print(f"make bench: the audit trail exported in {export['seconds']:.1f} s", file=sys.stderr)
    return audit_reading.report_lines(small, large, export, trail)


def audit_reading_part(url, small_url) -> list[str]:
    """`python bench/audit_reading.py`: the seeds, side A, and the audit part alone."""
    trail = seed(url)
    seed(small_url, trail["start"])
    grow_trail(url, trail)
    with devlab_server(url) as side:
        return read_the_trail(small_url, side, log_in(side.base, READER), trail)


# --- statements per request, in-process -----------------------------------------------------


def statement_counts(url, tokens: dict) -> dict:
    """Statements of one request per endpoint, after a warm-up, for sides A and B."""
    settings = server_env(url)
    os.environ.update(settings)  # what bench/reference_app.py reads on import
    from bench import reference_app
    from bench.statements import counting_statements
    from devlab import create_app
    from devlab.extensions import db

    devlab = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": settings["DATABASE_URL"],
            "JWT_SECRET_KEY": JWT_KEY,
            "RATELIMIT_ENABLED": False,
            "INSTANCE_PATH": settings["DEVLAB_INSTANCE_PATH"],
        }
    )
    with devlab.app_context():
        devlab_engine = db.engine
    with reference_app.app.app_context():
        reference_engine = reference_app.db.engine
    counts = {}
    for name, app, engine in (
        ("A", devlab, devlab_engine),
        ("B", reference_app.app, reference_engine),
    ):
        client = app.test_client()
        for endpoint, (method, path, _script, _c, names, user) in ENDPOINTS.items():
            if name not in names or endpoint == "POST /login":
                continue
            headers = {"Authorization": f"Bearer {tokens[user]}"}
            body = {"text": "counted"} if method == "POST" else None
            client.open(path, method=method, json=body, headers=headers)  # warm up
            with counting_statements(engine) as statements:
                client.open(path, method=method, json=body, headers=headers)
            counts[(endpoint, name)] = len(statements)
    with devlab.app_context():
        devlab_engine.dispose()
    reference_engine.dispose()
    return counts


# --- the report ---------------------------------------------------------------------------


# (endpoint, what, target): ratios of side A's median req/s to another side's, at least the target
RATIO_TARGETS = [
    ("GET /notes", "B", 0.9),
    ("POST /notes", "B", 0.9),
    ("GET /notes", "C", 1.3),
    ("POST /notes", "C", 1.3),
]
P99_OVER_P50_MAX = 3
FLOOD_MAX = 5


def target_checks(results, flood_ratio: float) -> list[str]:
    """One line per target of issue 8, saying whether this run met it."""

    def median(endpoint, side, key):
        return statistics.median(r[key] for r in results[(endpoint, side)])

    def line(text: str, met: bool) -> str:
        return f"- {'met' if met else 'NOT MET'}: {text}"

    lines = []
    for endpoint, other, target in RATIO_TARGETS:
        ratio = median(endpoint, "A", "rps") / median(endpoint, other, "rps")
        lines.append(
            line(f"{endpoint} A ÷ {other} {ratio:.2f}× (target ≥ {target}×)", ratio >= target)
        )
    spread = median("GET /notes", "A", "p99") / median("GET /notes", "A", "p50")
    lines.append(
        line(
            f"GET /notes p99 {spread:.1f}× p50 (target ≤ {P99_OVER_P50_MAX}×)",
            spread <= P99_OVER_P50_MAX,
        )
    )
    lines.append(
        line(
            f"GET /notes p99 under a login flood {flood_ratio:.1f}× idle (target ≤ {FLOOD_MAX}×)",
            flood_ratio <= FLOOD_MAX,
        )
    )
    return lines


def report(url, results, flood, counts, rss, reading: list[str]) -> None:
    rows = [
        "| endpoint | side | req/s | p50 ms | p99 ms | app CPU ms/req | PostgreSQL CPU ms/req "
        "| statements/req | RSS/worker MB | A ÷ B | A ÷ C |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for endpoint, (*_, names, _user) in ENDPOINTS.items():
        rps = {n: statistics.median(r["rps"] for r in results[(endpoint, n)]) for n in names}
        for name in names:
            runs = results[(endpoint, name)]
            errors = sum(r["errors"] for r in runs)
            ratio = {
                other: f"{rps['A'] / rps[other]:.2f}×" if name == "A" and other in rps else ""
                for other in "BC"
            }
            rows.append(
                f"| {endpoint} | {name} | {rps[name]:.0f}{f' ({errors} errors)' if errors else ''} "
                f"| {statistics.median(r['p50'] for r in runs):.2f} "
                f"| {statistics.median(r['p99'] for r in runs):.2f} "
                f"| {statistics.mean(r['app_cpu'] for r in runs):.2f} "
                f"| {statistics.mean(r['pg_cpu'] for r in runs):.2f} "
                f"| {counts.get((endpoint, name), '—')} | {rss[name]:.0f} "
                f"| {ratio['B']} | {ratio['C']} |"
            )
    flood_ratio = flood["flood_p99"] / flood["idle_p99"]
    checks = target_checks(results, flood_ratio)
    connection = connect(url, "postgres")
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    connection.close()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    section = "\n".join(
        [
            START,
            f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), "
            f"Python {platform.python_version()}, PostgreSQL {pg_version}; {ROUNDS} rounds of "
            f"{DURATION} s per endpoint and side, interleaved, then `GET /audit/logs` and "
            f"`POST /login` once; each load once the servers and PostgreSQL are idle; wrk "
            f"-t2 -c{CONNECTIONS} (`POST /login`: -c4). Medians of the rounds (CPU: means).",
            "",
            *rows,
            "",
            f"GET /notes p99 at 4 connections: {flood['idle_p99']:.2f} ms idle, "
            f"{flood['flood_p99']:.2f} ms while 16 clients log in as fast as they can for "
            f"{FLOOD_SECONDS} s ({flood_ratio:.1f}× idle; target ≤ 5×); meanwhile "
            f"{flood['logins_ok_rps']:.1f} logins/s succeeded and {flood['logins_refused']} "
            f"were refused (non-2xx; 503 when the hashing queue was full).",
            "",
            "Targets (issue 8):",
            *checks,
            "",
            *reading,
            END,
        ]
    )
    print(section)
    text = RESULTS.read_text() if RESULTS.exists() else f"# make bench results\n\n{START}\n{END}\n"
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    RESULTS.write_text(before + section + after)


if __name__ == "__main__":
    sys.exit(main())
