"""Signing keys: generated on first start, rotated by ``idp keys rotate``.

A retired key stays in the JWKS until every ID token it signed has expired.
"""

from __future__ import annotations

import functools
import json
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
            f"Signing key {kid} cannot be decrypted: IDP_ENCRYPTION_KEY (or, without it, "
            "IDP_SECRET_KEY) is not the one the key was stored with."
        ) from None


def signing_jwk() -> RSAKey:
    return private_key(active_key())
