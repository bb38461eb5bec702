"""The embedded SQLite database: write-ahead logging, and checkpoints after the answer.

Every connection uses write-ahead logging (readers never wait for the writer; a commit
appends its pages to the log instead of rewriting them through a rollback journal) with
``synchronous=NORMAL``, the setting SQLite recommends for WAL: a commit does not wait for an
fsync, the database cannot be corrupted, and what is committed survives a crash of the
process; a power loss may undo the last commits.

The log is copied back into the database (a checkpoint, with its fsync) every
``CHECKPOINT_EVERY`` commits of a process, by a short-lived thread started once the request
that reached that count has been answered: no request waits for it (SQLite lets readers and
the writer go on during a passive checkpoint, and Python's sqlite3 releases the GIL while
SQLite works). SQLite's own automatic checkpoint stays as a backstop at
``AUTOCHECKPOINT_PAGES`` pages of log.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from idp.request_hooks import request_hooks

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 100
AUTOCHECKPOINT_PAGES = 10_000  # 40 MB of log with 4 KiB pages


def pragmas(dbapi_connection, _record=None) -> None:
    """Set on each new connection; an in-memory database keeps its defaults."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        mode = cursor.fetchone()
        if mode and str(mode[0]).lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    finally:
        cursor.close()


def checkpoint(engine: Engine) -> None:
    """Copy what the log holds into the database, without waiting for readers or the
    writer (a passive checkpoint: what it cannot copy now is copied next time)."""
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception:  # noqa: BLE001 - the next checkpoint (or SQLite's own) catches up
        log.warning("SQLite checkpoint failed", exc_info=True)


def checkpoint_in_background(engine: Engine, running: threading.Lock) -> None:
    """Start a checkpoint in a thread of its own, unless one is running."""
    if not running.acquire(blocking=False):
        return

    def run() -> None:
        try:
            checkpoint(engine)
        finally:
            running.release()

    threading.Thread(target=run, name="sqlite-checkpoint", daemon=True).start()


def init_app(app: Flask, engine: Engine) -> None:
    event.listen(engine, "connect", pragmas)
    commits = {"count": 0}
    running = threading.Lock()

    @event.listens_for(engine, "commit")
    def count_commit(_connection) -> None:
        commits["count"] += 1

    @request_hooks(app).after
    def checkpoint_after_the_answer(response):
        if commits["count"] >= CHECKPOINT_EVERY:
            commits["count"] = 0
            response.call_on_close(lambda: checkpoint_in_background(engine, running))
        return response
