"""Signing keys: generated on first start, rotated by ``idp keys rotate``.

A retired key stays in the JWKS until every ID token it signed has expired.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from joserfc.jwk import KeySet, RSAKey

from idp.extensions import db
from idp.models import SigningKey
from idp.timeutil import utcnow


def _new_key() -> SigningKey:
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
    return SigningKey(
        kid=key.kid,
        alg="RS256",
        private_jwk=key.as_dict(private=True),
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


def signing_jwk() -> RSAKey:
    return RSAKey.import_key(active_key().private_jwk)
