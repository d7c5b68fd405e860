"""Prometheus metrics, and GET /metrics for those allowed to read them.

What is counted, in one place each:

- every answer, by method, route template (`/notes/<int:note_id>`, never the path a client
  sent; `unmatched` for a path no route has) and status, with its latency: `RequestMetrics`,
  the WSGI middleware that wraps the app inside the request id;
- committed audit rows by action, and from them login successes and failures: the audit hook
  calls `audit_rows_committed` after its commit (devlab/audit/trail.py);
- rate-limited requests by limit: devlab/ratelimit.py's 429;
- database errors by kind: devlab/errors.py's database_error_response;
- database connections in use: pool checkout and checkin;
- mails sent, and mails that could not be (the SMTP server down or refusing): devlab/mail.py.

Under gunicorn every worker counts into files of its own in one folder (prometheus_client's
multiprocess mode, set up by gunicorn.conf.py; see config.share_metrics_between_workers), and a
scrape adds them all up, whichever worker answers it. Without that folder (the tests, `flask`)
the process counts in memory, and a scrape shows its own counts.

/metrics is not part of the API: it is no route, and not in the OpenAPI document. A hook
before every other answers GET (and HEAD) /metrics when the request presents METRICS_TOKEN as
its bearer token (compared in constant time), or comes straight from an address in
METRICS_ALLOW: no X-Forwarded-For, Forwarded or X-Real-IP header, so that a request a proxy
passed on, even one on this host (whose TCP peer is then loopback), is never let in by address.
Any other request to /metrics, with any method, goes on to the routing and gets the 404 of a
path that does not exist: nothing tells that /metrics is there. A scrape writes no audit row,
is under no rate limit, and sends no SQL.
"""

import hashlib
import hmac
import time

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from sqlalchemy import event

from devlab.client import client_ip
from devlab.extensions import db

PATH = "/metrics"
# A route label for requests no route matched (unknown paths, a method a route does not take,
# the scrapes refused above): one label, however many paths clients make up.
UNMATCHED = "unmatched"
# Where a request's route label waits for the middleware, which counts once Flask is done with
# the request (and has dropped it): the matched rule's template, or /metrics for a scrape.
ROUTE = "devlab.metrics_route"
# Methods outside these count as `other`: a client can send any token as a method, and each
# label value is a series that Prometheus and every worker keep.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
# From 1 ms (GET /notes takes 2 to 5) to 10 s; a login's hashing lands between 0.1 and 0.5.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# prometheus_client chose its mode when it was imported: files in PROMETHEUS_MULTIPROC_DIR
# (gunicorn, every worker) or this process's memory.
MULTIPROCESS = values.ValueClass is not values.MutexValue

REQUESTS = Counter(
    "devlab_http_requests_total",
    "Requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "devlab_http_request_duration_seconds",
    "Seconds from a request reaching the app to its answer, by method, route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
LOGINS = Counter(
    "devlab_logins_total",
    "Logins, by outcome: success, or failure (a wrong password, an unknown or deactivated "
    "account).",
    ["outcome"],
)
LOGIN_OUTCOMES = {
    "login_success": LOGINS.labels("success"),
    "login_failed": LOGINS.labels("failure"),
}
RATE_LIMITED = Counter(
    "devlab_rate_limited_requests_total",
    "Requests answered 429 by a rate limit, by limit.",
    ["limit"],
)
AUDIT_ROWS = Counter(
    "devlab_audit_rows_written_total",
    "Audit rows committed, by action.",
    ["action"],
)
DATABASE_ERRORS = Counter(
    "devlab_database_errors_total",
    "Requests failed by the database, by kind: conflict (409), busy (a lock wait or the pool "
    "ran out), unavailable (503), other (500).",
    ["kind"],
)
MAILS_SENT = Counter(
    "devlab_mails_sent_total",
    "Mails handed to the SMTP server (password reset links).",
)
MAIL_FAILURES = Counter(
    "devlab_mail_failures_total",
    "Mails that could not be sent: the SMTP server unreachable, refusing, or not offering the "
    "TLS that SMTP_URL requires; or the outbox full.",
)
CONNECTIONS_IN_USE = Gauge(
    "devlab_database_connections_in_use",
    "Database connections checked out of the pools of the live workers.",
    multiprocess_mode="livesum",
)


class RequestMetrics:
    """WSGI middleware: count every answer the app makes, and time it."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        status = ["500"]  # unless the app answers: an exception that escaped it

        def start_response_counted(status_line, headers, exc_info=None):
            status[0] = status_line[:3]
            return start_response(status_line, headers, exc_info)

        try:
            return self.wsgi_app(environ, start_response_counted)
        finally:
            method = environ.get("REQUEST_METHOD")
            labels = (
                method if method in METHODS else "other",
                environ.get(ROUTE, UNMATCHED),
                status[0],
            )
            counter, histogram = _series.get(labels) or _series_of(labels)
            counter.inc()
            histogram.observe(time.perf_counter() - started)


# Each (method, route, status) has its series looked up once: prometheus_client's `labels()`
# checks and converts the values on every call, which took as long as counting itself. Their
# number is bounded (the routes, METHODS, the statuses the app answers with).
_series: dict[tuple[str, str, str], tuple] = {}


def _series_of(labels: tuple[str, str, str]) -> tuple:
    return _series.setdefault(labels, (REQUESTS.labels(*labels), LATENCY.labels(*labels)))


def note_the_route(_error) -> None:
    """Teardown hook (it runs whatever happened): keep the rule routing matched."""
    rule = request.url_rule
    if rule is not None:
        request.environ[ROUTE] = rule.rule


def audit_rows_committed(rows: list[dict]) -> None:
    """Count the audit rows a request just committed, and the logins among them."""
    for row in rows:
        AUDIT_ROWS.labels(row["action"]).inc()
        outcome = LOGIN_OUTCOMES.get(row["action"])
        if outcome is not None:
            outcome.inc()


def rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


def database_error(kind: str) -> None:
    DATABASE_ERRORS.labels(kind).inc()


def mail_sent() -> None:
    MAILS_SENT.inc()


def mail_failed() -> None:
    MAIL_FAILURES.inc()


def _checked_out(*_args) -> None:
    CONNECTIONS_IN_USE.inc()


def _checked_in(*_args) -> None:
    CONNECTIONS_IN_USE.dec()


def serve_metrics_to_those_allowed() -> Response | None:
    """Answer GET /metrics for a scraper that may read it; leave any other request alone."""
    if request.path != PATH or request.method not in ("GET", "HEAD") or not _may_read():
        return None
    request.environ[ROUTE] = PATH
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _may_read() -> bool:
    token = current_app.config["METRICS_TOKEN"]
    if token is not None:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        # Both hashed first: compare_digest takes as long for any token of a given length, and
        # comparing digests, whose length is fixed, tells nothing of the token's length either.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            hashlib.sha256(presented.strip().encode()).digest(),
            hashlib.sha256(token.encode()).digest(),
        ):
            return True
    if any(header in request.environ for header in FORWARDING_HEADERS):
        return False
    ip = client_ip()
    return ip is not None and any(ip in network for network in current_app.config["METRICS_ALLOW"])


def init_app(app: Flask) -> None:
    """Count the requests and the pool's connections, and answer scrapes. Call it after
    db_timeout.init_app, whose checkout hook may refuse a connection (its checkout is then not
    counted), and before the token check and the rate limits, so that a scrape meets neither."""
    app.wsgi_app = RequestMetrics(app.wsgi_app)
    app.before_request(serve_metrics_to_those_allowed)
    app.teardown_request(note_the_route)
    with app.app_context():
        engine = db.engine
    event.listen(engine, "checkout", _checked_out)
    event.listen(engine, "checkin", _checked_in)
