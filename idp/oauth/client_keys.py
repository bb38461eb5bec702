"""The public keys of ``private_key_jwt`` clients that registered a ``jwks_uri``.

The token endpoint reads the keys before it can check an assertion's signature, so anyone
can make it want them: they are fetched at most once per ``IDP_CLIENT_JWKS_REFETCH_SECONDS``
per client and worker, whatever happens (a failure, a ``kid`` the keys do not have, many
requests at once), and used for ``IDP_CLIENT_JWKS_CACHE_SECONDS``. A fetch follows no
redirect, gives up after ``IDP_CLIENT_JWKS_TIMEOUT``, reads at most ``MAX_BYTES`` and, in
production, connects only to addresses ``idp.outbound`` allows.

Keys a client rotated are found at the first assertion with a new ``kid`` once the
interval since the last fetch has passed; keys that could not be fetched again stay in use
until their cache time ends.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp import outbound

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024


class ClientKeysUnavailable(Exception):
    """The client's keys could not be fetched (and none are cached)."""


@dataclass(frozen=True)
class _Entry:
    keyset: KeySet | None
    kids: frozenset[str]
    usable_until: float  # time.monotonic(): the keys are used until then
    fetched_at: float    # time.monotonic() of the last fetch, successful or not


class ClientKeyCache:
    """One per application (``app.extensions["idp.client_keys"]``), shared by its threads."""

    def __init__(self, clock=time.monotonic):
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._clock = clock
        self.fetches = 0

    def keyset(self, client_id: str, uri: str, kid: str | None,
               config: Mapping[str, Any]) -> KeySet:
        """The keys to check an assertion of ``client_id`` (whose header named ``kid``)."""
        key = (client_id, uri)
        entry = self._entries.get(key)
        if entry is not None and self._answers(entry, kid):
            return entry.keyset
        with self._lock_for(key):
            entry = self._entries.get(key)  # another thread may have fetched meanwhile
            now = self._clock()
            if entry is not None and self._answers(entry, kid, now):
                return entry.keyset
            if entry is None or now - entry.fetched_at >= config[
                    "IDP_CLIENT_JWKS_REFETCH_SECONDS"]:
                entry = self._fetch(client_id, uri, entry, config, now)
                self._entries[key] = entry
        if entry.keyset is None or self._clock() >= entry.usable_until:
            raise ClientKeysUnavailable(client_id)
        return entry.keyset  # an unknown kid: the signature check refuses the assertion

    def _answers(self, entry: _Entry, kid: str | None, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        return (entry.keyset is not None and now < entry.usable_until
                and (kid is None or kid in entry.kids))

    def _lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _fetch(self, client_id: str, uri: str, previous: _Entry | None,
               config: Mapping[str, Any], now: float) -> _Entry:
        self.fetches += 1
        try:
            keyset = fetch_keyset(uri, config)
        except (OSError, ValueError, TypeError, KeyError, JoseError) as exc:
            log.warning("jwks_uri of client %s not usable: %s", client_id,
                        str(getattr(exc, "reason", None) or exc)[:200])
            if previous is None:
                return _Entry(None, frozenset(), 0.0, now)
            return _Entry(previous.keyset, previous.kids, previous.usable_until, now)
        kids = frozenset(k.kid for k in keyset.keys if k.kid)
        return _Entry(keyset, kids, now + config["IDP_CLIENT_JWKS_CACHE_SECONDS"], now)


def fetch_keyset(uri: str, config: Mapping[str, Any]) -> KeySet:
    """GET ``uri`` once (no redirect, bounded time and size) and read it as a JWKS."""
    opener = outbound.opener(config, outbound.NoRedirect)
    # A registered https (or loopback http) URI: idp.oauth.uris checked it.
    request = urllib.request.Request(uri, headers={"Accept": "application/json"})  # noqa: S310
    with opener.open(request, timeout=config["IDP_CLIENT_JWKS_TIMEOUT"]) as response:
        if response.status != 200:
            raise ValueError(f"answered {response.status}")
        body = response.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise ValueError(f"more than {MAX_BYTES} bytes")
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JSON Web Key Set")
    return KeySet.import_key_set(data)


def cache(app) -> ClientKeyCache:
    return app.extensions["idp.client_keys"]
