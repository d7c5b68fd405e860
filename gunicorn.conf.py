"""gunicorn settings; PORT, HOST and WEB_CONCURRENCY come from the environment or `.env`, and
the threads per worker from config.py (GUNICORN_THREADS), which the app reads too."""

import gc
import os
import sys

from dotenv import load_dotenv

# Like the `flask` command, read `.env` unless FLASK_SKIP_DOTENV says not to (the tests do).
if not os.environ.get("FLASK_SKIP_DOTENV"):
    load_dotenv()

# After load_dotenv: Config reads the environment when imported. A refused setting is one line
# (gunicorn would print a traceback), and the app is made once here before any worker starts
# (on_starting), so that what create_app refuses is one line too, not a traceback per worker.
try:
    from config import (
        Config,
        exit_on_start_up_failure,
        remove_metrics_folder,
        share_metrics_between_workers,
    )
except Exception as error:
    if type(error).__name__ != "ConfigError":
        raise
    sys.exit(f"DevLab cannot start: {error}")

# Before the app, and so prometheus_client, is imported (on_starting) and any worker forked:
# every worker counts into files of its own in this folder, and GET /metrics adds them all up
# (config.share_metrics_between_workers says where it is and why).
share_metrics_between_workers()

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8005')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads (gthread, 2 x 4 by default), not gunicorn's sync workers: a few clients sending their
# request slowly cannot occupy every worker, a login's password hashing (a tenth of a second)
# does not stop the worker, and while PostgreSQL is away the threads that wait on it leave
# others to answer /health. In production, a buffering reverse proxy in front (nginx, a cloud
# load balancer) is still the real defence against slow clients.
# gunicorn's gthread worker, except that closing a connection no longer waits on its event
# loop for the client's FIN (devlab/gthread_worker.py says why).
worker_class = "devlab.gthread_worker.ThreadWorker"
threads = Config.GUNICORN_THREADS
# No keep-alive: a connection carries one request. A gthread worker accepts every connection
# waiting when it wakes and keeps a kept-alive one for good, so one worker could hold nearly
# all of a busy client's connections while the other idled: under wrk's 32 kept-alive
# connections the workers' shares of the CPU were 2/98 and 95/5 in two runs of three (and
# throughput and p99 followed), against 45/55 to 49/51 in every run without keep-alive, at
# no measurable cost in req/s on loopback. Behind nginx this changes nothing: nginx opens a
# connection per request to its upstream unless told otherwise.
keepalive = 0
# A worker takes a connection only when one of its threads is free to answer it. gunicorn's
# default (1000) lets a worker accept every connection waiting and queue them behind its own
# threads while the other worker may be idle; with no more connections than threads, the
# waiting ones stay in the listening socket's queue, which both workers take from in turn, so
# the first to be free answers the oldest. GET /notes at 32 connections, 4 rounds interleaved,
# twice: p99 ÷ p50 2.50 → 2.02 and 2.84 → 2.47, req/s 651 → 671 and 544 → 570.
worker_connections = threads
timeout = 30
# SIGTERM (a deploy, `docker stop`): stop accepting, let requests in flight finish (their
# changes commit with their audit rows), then exit 0; past this many seconds workers are killed.
graceful_timeout = Config.GRACEFUL_TIMEOUT_SECONDS
# gunicorn answers a request line over this many bytes itself, with a 414 in HTML. Its default
# (4094) took query strings the app must answer, such as a page number of 5,000 digits (a JSON
# 422); 8190 is gunicorn's maximum, and every request the OpenAPI document allows is far
# shorter, since each query parameter has a maximum or an enum.
limit_request_line = 8190
# gunicorn would take the scheme from X-Forwarded-Proto, X-Forwarded-Ssl or X-Forwarded-Protocol
# sent from 127.0.0.1 (forwarded_allow_ips), and answer headers that contradict each other with
# its own 400 in HTML: a client of a proxy on the same host could send `X-Forwarded-Ssl: off`
# beside the proxy's `X-Forwarded-Proto: https`. The app decides the scheme alone (ProxyFix,
# with TRUSTED_PROXY_HOPS), so gunicorn reads none of these headers.
secure_scheme_headers = {}
# gunicorn 27's control socket sits in $HOME and would be shared by every instance; unused here.
control_socket_disable = True
# Access log: worker pid, client, method, path, status, size, time, and the request's id from
# the X-Request-ID the app answered with (devlab/request_id.py), as the app's own log lines of the
# request end. No query strings, request headers or bodies, so a token or password never reaches
# a log line, nor an id the app did not accept.
accesslog = "-"
access_log_format = '%(p)s %(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms request_id=%({x-request-id}o)s'
errorlog = "-"
# LOG_FORMAT=json: every line, gunicorn's and the app's, one JSON object on stdout, the access
# line with the same fields and no more (devlab/logs.py). Either class cuts query strings out
# of gunicorn's error lines, which quote the request lines it refuses.
logger_class = (
    "devlab.logs.JSONLinesLogger" if Config.LOG_FORMAT == "json" else "devlab.logs.GunicornLogger"
)


def post_worker_init(worker) -> None:
    """Move everything the worker holds once the app is loaded (modules, the app, its schemas
    and compiled statements) out of the garbage collector's reach: a full collection then
    walks only what requests allocate, and the pauses it makes in answers get shorter. GET
    /notes at 32 connections, 5 rounds each, interleaved: p99 ÷ p50 2.50 → 2.14 and 2.42 →
    2.16 in two runs, req/s unchanged within noise (bench/RESULTS.md)."""
    gc.freeze()


def on_starting(server) -> None:
    try:
        from devlab import create_app

        create_app()
    except Exception as error:  # exit_on_start_up_failure raises what it cannot explain
        remove_metrics_folder()  # gunicorn calls no on_exit when on_starting fails
        exit_on_start_up_failure(error)


def child_exit(server, worker) -> None:
    """A worker is gone (stopped, killed, timed out): its counters stay in the sum, but its
    share of the live gauges (the database connections in use) leaves it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    remove_metrics_folder()
