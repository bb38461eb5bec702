"""Sliding-window rate limits kept in the database, so every instance shares them.

Each key has one row holding the times of its recent events. The row is written before it
is read (an upsert), which locks it for the rest of the transaction on PostgreSQL and takes
SQLite's write lock: two instances counting the same key are serialised, never both let
through. Rows are locked in the order of their keys, so two transactions never wait on each
other in a cycle.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from idp.extensions import db
from idp.models import RateCounter
from idp.timeutil import utcnow


@dataclass(frozen=True)
class Limit:
    """At most ``count`` events per ``window`` seconds for one key."""

    name: str
    key: str
    count: int
    window: int


def _lock_row(key: str) -> None:
    dialect = db.session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    db.session.execute(
        insert(RateCounter).values(key=key, events=[], updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
    )
    # A write to the row, so the lock is ours even when the row existed already.
    db.session.execute(update(RateCounter).where(RateCounter.key == key)
                       .values(updated_at=utcnow()))


def _locked_rows(limits: list[Limit]) -> dict[str, RateCounter]:
    rows = {}
    for key in sorted({limit.key for limit in limits}):
        _lock_row(key)
        rows[key] = db.session.get(RateCounter, key, populate_existing=True)
    return rows


def _retry_after(limit: Limit, recent: list[float], now: float) -> int:
    """Seconds until one more event fits in ``limit``, given ``recent`` events (>= count)."""
    if limit.count <= 0 or not recent:
        return max(1, limit.window)
    # The event whose expiry brings the count below the limit.
    freeing = sorted(recent)[len(recent) - limit.count]
    return max(1, math.ceil(freeing + limit.window - now))


def hit(limits: list[Limit], now: float | None = None) -> tuple[Limit, int] | None:
    """Count one event against every limit, in the current transaction.

    Returns ``None`` when every limit allows it (the events are recorded; the caller
    commits), or the first refusing limit with the seconds until it allows again (nothing
    is recorded; the caller rolls back).
    """
    now = time.time() if now is None else now
    rows = _locked_rows(limits)
    updates = []
    for limit in limits:
        row = rows[limit.key]
        recent = [t for t in (row.events or []) if t > now - limit.window]
        if len(recent) >= limit.count:
            return limit, _retry_after(limit, recent, now)
        updates.append((row, recent))
    for row, recent in updates:
        row.events = [*recent, now]
    return None


def forget(limits: list[Limit], at: float) -> None:
    """Take back the event counted at ``at`` (e.g. a send that failed), in the current
    transaction; the caller commits."""
    rows = _locked_rows(limits)
    for row in rows.values():
        events = list(row.events or [])
        if at in events:
            events.remove(at)
            row.events = events
