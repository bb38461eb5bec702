"""Reading and ageing the rate-limit counters of the current app, whichever backend keeps
them (the ``rate_counters`` table, or Redis with ``IDP_REDIS_URL``)."""

from __future__ import annotations

from flask import current_app

from idp import ratelimit
from idp.extensions import db
from idp.models import RateCounter


def _redis():
    store = ratelimit.backend(current_app)
    return store if isinstance(store, ratelimit.RedisBackend) else None


def hit(*limits, now):
    """Count one event like a caller does: commit when allowed, roll back when refused."""
    refused = ratelimit.hit(list(limits), now=now)
    if refused is None:
        db.session.commit()
    else:
        db.session.rollback()
    return refused


def counted_events() -> dict[str, list[float]]:
    """Every counter: its key (without the Redis prefix) and the times of its events."""
    store = _redis()
    if store is None:
        db.session.expire_all()
        return {row.key: list(row.events) for row in db.session.scalars(db.select(RateCounter))}
    client = store.client
    counted = {}
    for name in client.scan_iter(match=store.prefix + "*", count=500):
        key = name.decode()[len(store.prefix):]
        counted[key] = [score for _member, score in client.zrange(name, 0, -1, withscores=True)]
    return counted


def events_of(key: str) -> list[float]:
    """The times of the events counted for ``key``, oldest first."""
    return sorted(counted_events().get(key, []))


def age_counted_events(seconds: float) -> None:
    """Move every counted event ``seconds`` into the past, as if that much time had passed."""
    store = _redis()
    if store is None:
        db.session.expire_all()
        for row in db.session.scalars(db.select(RateCounter)):
            row.events = [t - seconds for t in row.events]
        db.session.commit()
        return
    client = store.client
    for name in client.scan_iter(match=store.prefix + "*", count=500):
        members = client.zrange(name, 0, -1, withscores=True)
        if members:
            client.zadd(name, {member: score - seconds for member, score in members})
