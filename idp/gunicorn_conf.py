"""gunicorn settings for the IdP: ``gunicorn -c python:idp.gunicorn_conf`` (in the checkout
also ``gunicorn -c gunicorn.conf.py``); the application is ``idp.wsgi:app``. Options given on
the command line win over these.

Environment:

- ``GUNICORN_WORKERS`` (or ``WEB_CONCURRENCY``): worker processes, default 2;
- ``GUNICORN_THREADS``: threads per worker, default 1 (more than 1 uses gthread workers);
- ``GUNICORN_TIMEOUT``: seconds before a silent worker is restarted, default 30;
- ``GUNICORN_GRACEFUL_TIMEOUT``: seconds a worker has to finish on restart/stop, default 30;
- ``GUNICORN_KEEPALIVE``: seconds to keep an idle connection, default 2;
- ``GUNICORN_MAX_REQUESTS`` (and ``GUNICORN_MAX_REQUESTS_JITTER``): recycle a worker after
  that many requests, default 0 (never);
- ``GUNICORN_BIND``: address, default ``127.0.0.1:$PORT`` (``PORT`` default 8000);
- ``GUNICORN_ACCESS_LOG``: where access lines go, default ``-`` (stdout); empty for none.
- ``PROMETHEUS_MULTIPROC_DIR``: where the workers keep their metrics so that ``/metrics``
  adds them up. Emptied when the server starts (one directory per gunicorn master); when
  unset, a fresh temporary directory is made and removed when the server stops.

The worker count the server really runs is exported to the workers as ``GUNICORN_WORKERS``, so
the production checks (SQLite serves one worker only) see it, whatever set it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _number(name: str, default: int, *alternatives: str) -> int:
    for variable in (name, *alternatives):
        raw = os.environ.get(variable, "").strip()
        if raw:
            if not raw.isdigit():
                raise ValueError(f"{variable} must be a whole number (it is {raw!r}).")
            return int(raw)
    return default


wsgi_app = "idp.wsgi:app"
bind = [os.environ.get("GUNICORN_BIND") or f"127.0.0.1:{os.environ.get('PORT') or 8000}"]
workers = max(1, _number("GUNICORN_WORKERS", 2, "WEB_CONCURRENCY"))
threads = max(1, _number("GUNICORN_THREADS", 1))
timeout = _number("GUNICORN_TIMEOUT", 30)
graceful_timeout = _number("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _number("GUNICORN_KEEPALIVE", 2)
max_requests = _number("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _number("GUNICORN_MAX_REQUESTS_JITTER", 0)
os.environ.setdefault("GUNICORN_WORKERS", str(workers))  # exact once on_starting runs
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
# The path without the query string, where link tokens travel.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'

# Metrics of every worker (prometheus-client's multiprocess mode). The variable must be set
# before any worker imports prometheus_client, so it is set here, when the master reads this
# file (also before an application preloaded in the master).
_TEMPORARY_MARK = "_IDP_METRICS_TEMPORARY_DIR"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="idp-metrics-")
    os.environ[_TEMPORARY_MARK] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def on_starting(server):
    """Once, in the master, before the first worker: forget a previous run's metrics and
    tell the workers how many of them there are."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ["GUNICORN_WORKERS"] = str(server.cfg.workers)


def child_exit(server, worker):
    """A worker is gone: its live gauges no longer count (its counters still do)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_exit(server):
    temporary = os.environ.get(_TEMPORARY_MARK)
    if temporary and temporary == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(temporary, ignore_errors=True)
