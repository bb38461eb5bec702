"""Signing keys: generated on first start, rotated by ``idp keys rotate``.

A retired key stays in the JWKS until every ID token it signed has expired.

Each worker keeps the JWKS it publishes, rendered, for ``IDP_JWKS_CACHE_SECONDS`` (5 s by
default; 0 reads the database on every request). A key rotated by another process (another
instance, the command line) is therefore published by every worker within that time; a worker
that signs with a key its copy does not have, or rotates the key itself, reads the keys again
at once, and a retired key leaves the copy when its ``publish_until`` passes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from joserfc.jwk import KeySet, RSAKey

from idp.crypto import InvalidToken, decrypt, encrypt
from idp.extensions import db
from idp.models import SigningKey
from idp.timeutil import utcnow


def _new_key() -> SigningKey:
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
    return SigningKey(
        kid=key.kid,
        alg="RS256",
        private_jwk_encrypted=encrypt(json.dumps(key.as_dict(private=True))),
        public_jwk=key.as_dict(private=False),
        active=True,
    )


def active_key() -> SigningKey:
    """The key that signs now; one is created when there is none."""
    key = db.session.scalar(
        db.select(SigningKey).filter_by(active=True).order_by(SigningKey.id.desc())
    )
    if key is None:
        key = _new_key()
        db.session.add(key)
        db.session.commit()
    ensure_published(key.kid)
    return key


def rotate() -> SigningKey:
    """Make a new key the signing key; older keys stay published while tokens need them."""
    now = utcnow()
    keep = timedelta(seconds=current_app.config["IDP_ID_TOKEN_LIFETIME"] + 300)
    for old in db.session.scalars(db.select(SigningKey).filter_by(active=True)):
        old.active = False
        old.retired_at = now
        old.publish_until = now + keep
    key = _new_key()
    db.session.add(key)
    db.session.commit()
    forget_published()
    return key


def published_keys() -> list[SigningKey]:
    """The active key and the retired keys still needed to verify tokens they signed.

    The signing key is created here when there is none yet, so the JWKS of a fresh
    installation is never empty.
    """
    active_key()
    now = utcnow()
    query = db.select(SigningKey).where(
        SigningKey.active.is_(True) | (SigningKey.publish_until > now)
    ).order_by(SigningKey.id.desc())
    return list(db.session.scalars(query))


def jwks() -> dict:
    return {"keys": [k.public_jwk for k in published_keys()]}


_PUBLISHED = "idp.published_keys"


@dataclass(frozen=True)
class Published:
    """The JWKS as served: its JSON, its entity tag (unquoted) and the key ids in it."""

    body: bytes
    etag: str
    kids: frozenset[str]
    until: float  # time.monotonic() after which the keys are read again


def published() -> Published:
    """The JWKS of this worker (see the module's docstring for how fresh it is)."""
    cached: Published | None = current_app.extensions.get(_PUBLISHED)
    now = time.monotonic()
    if cached is not None and now < cached.until:
        return cached
    rows = published_keys()
    body = json.dumps({"keys": [k.public_jwk for k in rows]}, separators=(",", ":"),
                      sort_keys=True).encode()
    lifetime = float(current_app.config["IDP_JWKS_CACHE_SECONDS"])
    leaving = [k.publish_until for k in rows if not k.active and k.publish_until is not None]
    if leaving:
        lifetime = min(lifetime, (min(leaving) - utcnow()).total_seconds())
    entry = Published(body=body, etag=hashlib.sha256(body).hexdigest()[:32],
                      kids=frozenset(k.kid for k in rows), until=now + lifetime)
    if lifetime > 0:
        current_app.extensions[_PUBLISHED] = entry
    return entry


def fresh_published(app) -> Published | None:
    """The JWKS this worker has rendered, while it is fresh (``idp.public_documents``)."""
    cached: Published | None = app.extensions.get(_PUBLISHED)
    return cached if cached is not None and time.monotonic() < cached.until else None


def forget_published() -> None:
    """Read the keys again at the next request (after a rotation)."""
    current_app.extensions.pop(_PUBLISHED, None)


def ensure_published(kid: str) -> None:
    """A key that signs here is published here at once."""
    cached: Published | None = current_app.extensions.get(_PUBLISHED)
    if cached is not None and kid not in cached.kids:
        forget_published()


def verification_keyset() -> KeySet:
    return KeySet.import_key_set(jwks())


def private_key(row: SigningKey) -> RSAKey:
    """The usable private key of a stored signing key (decrypted once per process)."""
    return _decrypted(row.kid, row.private_jwk_encrypted)


@functools.lru_cache(maxsize=16)
def _decrypted(kid: str, encrypted: str) -> RSAKey:
    try:
        return RSAKey.import_key(json.loads(decrypt(encrypted)))
    except InvalidToken:
        raise RuntimeError(
            f"Signing key {kid} cannot be decrypted: neither IDP_ENCRYPTION_KEY (or, without "
            "it, IDP_SECRET_KEY) nor IDP_ENCRYPTION_OLD_KEYS holds the key it was stored with."
        ) from None


def signing_jwk() -> RSAKey:
    return private_key(active_key())
