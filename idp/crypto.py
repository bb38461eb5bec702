"""Encryption at rest and keyed digests, with keys from configuration.

``IDP_ENCRYPTION_KEY`` (any long random string) encrypts secrets that must be read back,
such as authenticator-app secrets and signing keys. Without it (development only), a key is
derived from ``SECRET_KEY``; production requires it, so that the session key can rotate on
its own.

The key that encrypts is derived from that setting with HKDF-SHA256 (info
``idp encryption key v1``); a value encrypted now reads ``v1.<key id>.<Fernet token>``, the
key id (also from HKDF) naming the setting it was made with. Rotation: make the new value
``IDP_ENCRYPTION_KEY`` and move the old one to ``IDP_ENCRYPTION_OLD_KEYS`` (comma
separated), which still decrypt; ``idp keys reencrypt`` then moves every stored value to the
current key. Values stored before key ids existed (a bare Fernet token, whose key was the
SHA-256 of ``idp:encryption:<setting>``) still decrypt with the current or an old setting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

__all__ = ["InvalidToken", "Keyring", "decrypt", "encrypt", "is_current", "keyed_digest",
           "keyring"]

FORMAT = "v1"
KEY_INFO = b"idp encryption key v1"
KEY_ID_INFO = b"idp encryption key id v1"


def _derive(purpose: str, material: str) -> bytes:
    return hashlib.sha256(f"idp:{purpose}:{material}".encode()).digest()


def _hkdf(material: str, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=info).derive(material.encode())


@dataclass(frozen=True)
class EncryptionKey:
    """One configured key: its public id and the Fernet key derived from it."""

    kid: str
    fernet: Fernet

    @classmethod
    def derive(cls, material: str) -> EncryptionKey:
        kid = base64.urlsafe_b64encode(_hkdf(material, KEY_ID_INFO, 6)).decode()
        return cls(kid, Fernet(base64.urlsafe_b64encode(_hkdf(material, KEY_INFO, 32))))


class Keyring:
    """The current key, which encrypts, and the old ones, which still decrypt."""

    def __init__(self, current: str, old: list[str] | tuple[str, ...] = ()):
        materials = list(dict.fromkeys([current, *old]))
        keys = [EncryptionKey.derive(m) for m in materials]
        self.current = keys[0]
        self.by_kid = {k.kid: k for k in reversed(keys)}
        # Values stored before key ids: a bare Fernet token under SHA-256 of the setting.
        self._legacy = MultiFernet([
            Fernet(base64.urlsafe_b64encode(_derive("encryption", m))) for m in materials
        ])

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Keyring:
        current = config.get("IDP_ENCRYPTION_KEY") or config["SECRET_KEY"]
        old = [m.strip() for m in (config.get("IDP_ENCRYPTION_OLD_KEYS") or "").split(",")]
        return cls(current, [m for m in old if m])

    def encrypt(self, text: str) -> str:
        token = self.current.fernet.encrypt(text.encode()).decode()
        return f"{FORMAT}.{self.current.kid}.{token}"

    def decrypt(self, value: str) -> str:
        """Raises ``InvalidToken`` when no configured key made ``value`` or it was
        tampered with."""
        if value.startswith(FORMAT + "."):
            _format, kid, token = (value.split(".", 2) + ["", ""])[:3]
            key = self.by_kid.get(kid)
            if key is None:
                raise InvalidToken
            return key.fernet.decrypt(token.encode()).decode()
        return self._legacy.decrypt(value.encode()).decode()

    def is_current(self, value: str) -> bool:
        """Whether ``value`` is already encrypted with the current key."""
        return value.startswith(f"{FORMAT}.{self.current.kid}.")


def keyring() -> Keyring:
    """The application's keyring (derived once per application)."""
    extensions = current_app.extensions
    ring = extensions.get("idp.keyring")
    if ring is None:
        ring = extensions["idp.keyring"] = Keyring.from_config(current_app.config)
    return ring


def encrypt(text: str) -> str:
    return keyring().encrypt(text)


def decrypt(token: str) -> str:
    """Raises ``InvalidToken`` when the key changed or the value was tampered with."""
    return keyring().decrypt(token)


def is_current(token: str) -> bool:
    return keyring().is_current(token)


def keyed_digest(value: str, purpose: str) -> str:
    """HMAC-SHA256 with a server key: for low-entropy secrets such as six-digit codes,
    whose plain digest could be reversed by trying every value."""
    key = _derive(purpose, current_app.config["SECRET_KEY"])
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


class UndecryptableValue(RuntimeError):
    """A stored value that no configured key decrypts."""


def reencrypt(columns: list) -> dict[str, int]:
    """Encrypt again with the current key every stored value of ``columns`` (model
    attributes, e.g. ``MfaFactor.secret_encrypted``) that another key made; returns how many
    were moved per ``table.column``. Runs in the session's transaction: the caller commits,
    or rolls back when :class:`UndecryptableValue` is raised (naming the row)."""
    from sqlalchemy import select, update

    from idp.extensions import db

    ring = keyring()
    moved: dict[str, int] = {}
    for attribute in columns:
        column = attribute.property.columns[0]
        table = column.table
        (primary_key,) = table.primary_key.columns
        name = f"{table.name}.{column.name}"
        rows = db.session.execute(select(primary_key, column).where(column.is_not(None)))
        count = 0
        for ident, value in rows.all():
            if ring.is_current(value):
                continue
            try:
                plain = ring.decrypt(value)
            except InvalidToken:
                raise UndecryptableValue(
                    f"{name} of row {ident} cannot be decrypted with IDP_ENCRYPTION_KEY or "
                    "IDP_ENCRYPTION_OLD_KEYS") from None
            # Only if unchanged meanwhile (a value written since is under the current key).
            result = db.session.execute(
                update(table).where(primary_key == ident, column == value)
                .values({column.name: ring.encrypt(plain)}))
            count += result.rowcount
        moved[name] = count
    return moved
