"""Encryption at rest and keyed digests, with keys from configuration.

``IDP_ENCRYPTION_KEY`` (any long random string) encrypts secrets that must be read back,
such as authenticator-app secrets. Without it, a key is derived from ``SECRET_KEY``; set
it separately in production so that the session key can rotate on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app

__all__ = ["InvalidToken", "decrypt", "encrypt", "keyed_digest"]


def _derive(purpose: str, material: str) -> bytes:
    return hashlib.sha256(f"idp:{purpose}:{material}".encode()).digest()


def _fernet() -> Fernet:
    config = current_app.config
    material = config.get("IDP_ENCRYPTION_KEY") or config["SECRET_KEY"]
    return Fernet(base64.urlsafe_b64encode(_derive("encryption", material)))


def encrypt(text: str) -> str:
    return _fernet().encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    """Raises ``InvalidToken`` when the key changed or the value was tampered with."""
    return _fernet().decrypt(token.encode()).decode()


def keyed_digest(value: str, purpose: str) -> str:
    """HMAC-SHA256 with a server key: for low-entropy secrets such as six-digit codes,
    whose plain digest could be reversed by trying every value."""
    key = _derive(purpose, current_app.config["SECRET_KEY"])
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
