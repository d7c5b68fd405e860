"""What the metrics cost a request: CPU time per request with and without them, in-process.

Two apps on one throwaway schema of the PostgreSQL at TEST_DATABASE_URL (dropped at the end):
one as create_app builds it, one with every per-request piece of devlab/metrics.py taken out
(the WSGI middleware that counts and times, the scrape hook, the route teardown, the pool's
checkout and checkin listeners). Batches of the same request alternate between them, and each
batch's CPU time (this process's, `time.process_time`) is divided by its requests. Each round
runs one batch on each app, in turn first; the figure is the median of the rounds' differences,
with their quartiles, since on a shared machine the spread between rounds is larger than the
difference. --control takes the metrics out of both apps: what it prints is the noise floor.
The counts go to files in a temporary folder, as under gunicorn (prometheus_client's
multiprocess mode), unless --in-memory.

    TEST_DATABASE_URL=postgresql://… .venv/bin/python bench/metrics_cost.py [--rounds 60]
"""

import argparse
import gc
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PATHS = ("/notes", "/health")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60, help="batches of each app per path")
    parser.add_argument("--batch", type=int, default=100, help="requests per batch")
    parser.add_argument("--in-memory", action="store_true", help="count in memory, not in files")
    parser.add_argument("--control", action="store_true", help="no metrics in either app")
    options = parser.parse_args()

    from config import remove_metrics_folder, share_metrics_between_workers

    if not options.in_memory:
        share_metrics_between_workers()  # before prometheus_client is imported, as gunicorn does
    try:
        measure(options)
    finally:
        remove_metrics_folder()


def measure(options: argparse.Namespace) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import event, text

    from config import normalize_database_url
    from devlab import create_app, metrics
    from devlab.extensions import db

    url = normalize_database_url(os.environ.get("TEST_DATABASE_URL", ""))
    if not url.startswith("postgresql+psycopg2://"):
        sys.exit("Set TEST_DATABASE_URL to a PostgreSQL database.")
    schema = f"bench_metrics_{secrets.token_hex(4)}"
    settings = {
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"options": f"-csearch_path={schema}"}},
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "RATELIMIT_ENABLED": False,
        "ARGON2_TIME_COST": 1,
        "ARGON2_MEMORY_KIB": 8,
        "ARGON2_PARALLELISM": 1,
    }
    measured, bare = create_app(settings), create_app(settings)
    take_the_metrics_out(bare, metrics, event, db)
    if options.control:
        take_the_metrics_out(measured, metrics, event, db)
    with measured.app_context():
        db.session.execute(text(f"CREATE SCHEMA {schema}"))
        db.session.commit()
        upgrade()
    try:
        headers = seed(measured.test_client())
        print(
            f"metrics in {'memory' if options.in_memory else 'files (multiprocess mode)'}"
            f"{'; CONTROL: no metrics in either app' if options.control else ''}; "
            f"{options.rounds} rounds of {options.batch} requests per app and path"
        )
        for path in PATHS:
            clients = {"with metrics": measured.test_client(), "without": bare.test_client()}
            for client in clients.values():  # warm up: pools, caches, label children
                for _ in range(50):
                    assert client.get(path, headers=headers).status_code == 200
            gc.collect()
            gc.freeze()  # as gunicorn.conf.py's post_worker_init: fewer, shorter collections
            cpu = {name: [] for name in clients}
            for round_number in range(options.rounds):
                order = list(clients) if round_number % 2 == 0 else list(reversed(clients))
                for name in order:
                    client = clients[name]
                    started = time.process_time()
                    for _ in range(options.batch):
                        client.get(path, headers=headers)
                    cpu[name].append((time.process_time() - started) / options.batch * 1e6)
            without = statistics.median(cpu["without"])
            differences = [a - b for a, b in zip(cpu["with metrics"], cpu["without"], strict=True)]
            low, median, high = statistics.quantiles(differences, n=4)
            print(
                f"GET {path:7} CPU per request without metrics {without:7.1f} µs; with them "
                f"{median:+6.1f} µs ({median / without * 100:+.1f} %), "
                f"quartiles {low:+.1f} to {high:+.1f} µs"
            )
    finally:
        for app in (measured, bare):
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        with measured.app_context(), db.engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        with measured.app_context():
            db.engine.dispose()


def take_the_metrics_out(app, metrics, event, db) -> None:
    """Undo metrics.init_app on `app`: the middleware, the hooks and the pool listeners."""
    wrapper, inner = app, app.wsgi_app
    while not isinstance(inner, metrics.RequestMetrics):
        wrapper, inner = inner, inner.wsgi_app
    wrapper.wsgi_app = inner.wsgi_app
    app.before_request_funcs[None].remove(metrics.serve_metrics_to_those_allowed)
    app.teardown_request_funcs[None].remove(metrics.note_the_route)
    with app.app_context():
        engine = db.engine
    event.remove(engine, "checkout", metrics._checked_out)
    event.remove(engine, "checkin", metrics._checked_in)


def seed(client) -> dict:
    account = {"username": "alice", "email": "alice@example.com", "password": "a bench password"}
    assert client.post("/signup", json=account).status_code == 201
    login = client.post("/login", json={"username": "alice", "password": "a bench password"})
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    for n in range(20):
        assert client.post("/notes", json={"text": f"note {n}"}, headers=headers).status_code == 201
    return headers


if __name__ == "__main__":
    main()
