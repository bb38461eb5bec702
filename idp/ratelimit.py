"""Sliding-window rate limits shared by every instance: in Redis when ``IDP_REDIS_URL`` is
set, in the database otherwise. Both behave the same way:

- :func:`hit` counts one event against several limits at once, all or nothing: when one limit
  refuses, nothing is recorded against any of them, so hammering never extends a lockout;
- the window slides: an event counts for ``window`` seconds after it happened;
- a refusal names the first refusing limit in the caller's order and the seconds until one
  more event fits;
- :func:`forget` takes back an event counted earlier (e.g. a send that failed).

The database backend works in the caller's transaction (the caller commits after an allowed
hit, rolls back after a refusal). Each key has one row holding the times of its recent
events. The row is written before it is read (an upsert), which locks it for the rest of the
transaction on PostgreSQL and takes SQLite's write lock: two instances counting the same key
are serialised, never both let through. Rows are locked in the order of their keys, so two
transactions never wait on each other in a cycle.

The Redis backend keeps one sorted set per key (``idp:rl:<key>``, members scored by the time
of the event) and checks and records every limit of a hit in one Lua script, which Redis runs
atomically; a key expires once its newest event has left the window. Its writes take effect
at once, whatever the caller's transaction does. When Redis does not answer, :func:`hit`
raises :class:`RateLimitUnavailable`: the action is refused (fail closed), since letting
password guesses or text messages through unthrottled is worse than a short outage.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy import bindparam, update

from idp.extensions import db, dialect_insert
from idp.models import RateCounter
from idp.timeutil import utcnow

log = logging.getLogger(__name__)

EXTENSION = "idp.ratelimit"
REDIS_PREFIX = "idp:rl:"
# What a refusal for an unavailable store tells the client to wait, in seconds.
UNAVAILABLE_RETRY_AFTER = 30


@dataclass(frozen=True)
class Limit:
    """At most ``count`` events per ``window`` seconds for one key."""

    name: str
    key: str
    count: int
    window: int


class RateLimitUnavailable(RuntimeError):
    """The rate-limit store did not answer; the action must be refused for now."""

    retry_after = UNAVAILABLE_RETRY_AFTER


# --- the database ---------------------------------------------------------------------------


class DatabaseBackend:
    """Counters in the ``rate_counters`` table, in the caller's transaction."""

    name = "database"

    def __init__(self):
        self._lock_statements: dict[str, object] = {}

    def _lock_statement(self):
        """``INSERT … ON CONFLICT (key) DO UPDATE SET updated_at … RETURNING events``: one
        statement creates the row if needed, locks it (a write) and reads it."""
        dialect = db.session.get_bind().dialect.name
        statement = self._lock_statements.get(dialect)
        if statement is None:
            table = RateCounter.__table__
            statement = dialect_insert(table).values(
                key=bindparam("key"), events=bindparam("empty", type_=table.c.events.type),
                updated_at=bindparam("now", type_=table.c.updated_at.type))
            statement = statement.on_conflict_do_update(
                index_elements=[table.c.key],
                set_={"updated_at": statement.excluded.updated_at},
            ).returning(table.c.events)
            self._lock_statements[dialect] = statement
        return statement

    def _locked_events(self, limits: list[Limit]) -> dict[str, list[float]]:
        """The recorded events of each key, the rows locked in the order of their keys."""
        statement, now = self._lock_statement(), utcnow()
        return {key: list(db.session.execute(statement, {"key": key, "empty": [],
                                                         "now": now}).scalar_one() or [])
                for key in sorted({limit.key for limit in limits})}

    @staticmethod
    def _store(key: str, events: list[float]) -> None:
        db.session.execute(_STORE_EVENTS, {"row_key": key, "events": events})

    def hit(self, limits: list[Limit], now: float) -> tuple[Limit, float | None] | None:
        stored = self._locked_events(limits)
        kept: dict[str, list[float]] = {}
        for limit in limits:
            recent = sorted(t for t in stored[limit.key] if t > now - limit.window)
            if len(recent) >= limit.count:
                freeing = recent[len(recent) - limit.count] if limit.count > 0 else None
                return limit, freeing
            # A key under several limits keeps what its longest window still holds.
            kept[limit.key] = max(kept.get(limit.key, []), recent, key=len)
        for key, recent in kept.items():
            self._store(key, [*recent, now])
        return None

    def forget(self, limits: list[Limit], at: float) -> None:
        for key, events in self._locked_events(limits).items():
            if at in events:
                events.remove(at)
                self._store(key, events)

    def ping(self) -> None:
        """The database is checked by ``/readyz`` itself."""


_STORE_EVENTS = (update(RateCounter.__table__)
                 .where(RateCounter.__table__.c.key == bindparam("row_key"))
                 .values(events=bindparam("events")))


# --- Redis ----------------------------------------------------------------------------------

# KEYS: the distinct keys. ARGV: now, member, number of limits, then per limit the index of
# its key, its count and its cutoff (events at or before it have left the window), then per
# key the cutoff of its longest window and its time to live (ms). The checks only read: a
# refusal changes nothing. Returns nil when allowed (every key got the event, and lost the
# events outside all its windows), else {limit number, score of the event whose expiry frees
# a slot, or "" when there is none}.
HIT_SCRIPT = """
local now, member, nlimits = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pos = 4
for j = 1, nlimits do
  local key = KEYS[tonumber(ARGV[pos])]
  local count = tonumber(ARGV[pos + 1])
  local lower = '(' .. ARGV[pos + 2]
  local recent = redis.call('ZCOUNT', key, lower, '+inf')
  if recent >= count then
    if count <= 0 or recent == 0 then
      return {j, ''}
    end
    local freeing = redis.call('ZRANGEBYSCORE', key, lower, '+inf', 'WITHSCORES',
                               'LIMIT', recent - count, 1)
    return {j, freeing[2]}
  end
  pos = pos + 3
end
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[pos])
  redis.call('ZADD', KEYS[i], now, member)
  local ttl = tonumber(ARGV[pos + 1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
  pos = pos + 2
end
return false
"""

# KEYS: the distinct keys. ARGV: the time of the event to take back from each.
FORGET_SCRIPT = """
for i = 1, #KEYS do
  local found = redis.call('ZRANGEBYSCORE', KEYS[i], ARGV[1], ARGV[1], 'LIMIT', 0, 1)
  if found[1] then
    redis.call('ZREM', KEYS[i], found[1])
  end
end
return 0
"""


def redacted_location(url: str) -> str:
    """Where a Redis URL points, without its credentials (for log lines)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = "?"
    database = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{port}/{database}"


class RedisBackend:
    """Counters in Redis. The client (and its connection pool) is made on first use; no
    connection is opened before a limit is counted or ``/readyz`` asks."""

    name = "redis"

    def __init__(self, url: str, timeout: float, prefix: str = REDIS_PREFIX):
        self.url, self.timeout, self.prefix = url, timeout, prefix
        self.location = redacted_location(url)
        self._client = None
        self._scripts = None
        self._lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import redis
                    from redis.backoff import NoBackoff
                    from redis.retry import Retry

                    # No retries: a script counts events, and running it twice would count
                    # them twice; a stale pooled connection is replaced before use anyway.
                    client = redis.Redis.from_url(
                        self.url, socket_timeout=self.timeout,
                        socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0),
                    )
                    self._scripts = (client.register_script(HIT_SCRIPT),
                                     client.register_script(FORGET_SCRIPT))
                    self._client = client
        return self._client

    def _call(self, what: str, run):
        import redis

        try:
            return run()
        except redis.RedisError as exc:
            log.error("rate limits unavailable: Redis at %s failed to %s (%s: %s); "
                      "refusing until it answers", self.location, what,
                      type(exc).__name__, exc)
            raise RateLimitUnavailable(f"Redis at {self.location} is unavailable") from None

    def hit(self, limits: list[Limit], now: float) -> tuple[Limit, float | None] | None:
        keys = list(dict.fromkeys(limit.key for limit in limits))
        index = {key: number for number, key in enumerate(keys, start=1)}
        longest = {key: max(limit.window for limit in limits if limit.key == key)
                   for key in keys}
        args: list[object] = [repr(now), f"{now!r}:{secrets.token_hex(8)}", len(limits)]
        for limit in limits:
            args += [index[limit.key], limit.count, repr(now - limit.window)]
        for key in keys:
            args += [repr(now - longest[key]), max(1, math.ceil(longest[key] * 1000))]
        client = self.client
        script = self._scripts[0]
        result = self._call("count a limit", lambda: script(
            keys=[self.prefix + key for key in keys], args=args, client=client))
        if result is None:
            return None
        number, freeing = result
        limit = limits[int(number) - 1]
        return limit, (float(freeing) if freeing not in (b"", "", None) else None)

    def forget(self, limits: list[Limit], at: float) -> None:
        keys = list(dict.fromkeys(self.prefix + limit.key for limit in limits))
        if not keys:
            return
        client = self.client
        script = self._scripts[1]
        # When Redis does not answer, the event keeps counting: stricter, never looser.
        with contextlib.suppress(RateLimitUnavailable):
            self._call("take back an event", lambda: script(keys=keys, args=[repr(at)],
                                                            client=client))

    def ping(self) -> None:
        client = self.client
        self._call("answer a ping", client.ping)


# --- the interface --------------------------------------------------------------------------

DATABASE = DatabaseBackend()


def init_app(app: Flask) -> None:
    """Choose the backend for ``app`` from ``IDP_REDIS_URL`` (nothing is connected yet)."""
    url = app.config.get("IDP_REDIS_URL")
    app.extensions[EXTENSION] = (
        RedisBackend(url, app.config.get("IDP_REDIS_TIMEOUT", 2.0)) if url else DATABASE
    )


def backend(app: Flask | None = None) -> DatabaseBackend | RedisBackend:
    app = app or current_app
    return app.extensions.get(EXTENSION, DATABASE)


def _retry_after(limit: Limit, freeing: float | None, now: float) -> int:
    """Seconds until one more event fits in ``limit``, given the time of the event whose
    expiry brings the count below the limit (``None``: wait a whole window)."""
    if freeing is None:
        return max(1, limit.window)
    return max(1, math.ceil(freeing + limit.window - now))


def hit(limits: list[Limit], now: float | None = None) -> tuple[Limit, int] | None:
    """Count one event against every limit.

    Returns ``None`` when every limit allows it (the events are recorded; with the database
    the caller commits), or the first refusing limit with the seconds until it allows again
    (nothing is recorded; with the database the caller rolls back). Raises
    :class:`RateLimitUnavailable` when the store does not answer.
    """
    now = time.time() if now is None else now
    limits = list(limits)
    if not limits:
        return None
    refused = backend().hit(limits, now)
    if refused is None:
        return None
    limit, freeing = refused
    from idp.metrics import throttle_hit

    throttle_hit(limit.name)
    retry_after = _retry_after(limit, freeing, now)
    return limit, retry_after


def forget(limits: list[Limit], at: float) -> None:
    """Take back the event counted at ``at`` (e.g. a send that failed); with the database in
    the current transaction, which the caller commits. When the store does not answer, the
    event keeps counting (logged)."""
    limits = list(limits)
    if limits:
        backend().forget(limits, at)


def ping(app: Flask | None = None) -> None:
    """Raise :class:`RateLimitUnavailable` when a separate store (Redis) does not answer."""
    backend(app).ping()
