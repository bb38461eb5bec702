"""Small primitives for secrets: random values, digests and constant-time checks.

High-entropy secrets (client secrets, codes, tokens, session ids) are stored as SHA-256
digests: they cannot be guessed, so a slow hash would only slow the hot paths down.
Passwords use argon2id (see ``idp.passwords``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random string with ``nbytes`` bytes of entropy (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    """Hex SHA-256 of a high-entropy secret, for storage and lookup."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def digest_matches(value: str, stored_digest: str | None) -> bool:
    """Compare a presented secret with a stored digest in constant time."""
    if not stored_digest or value is None:
        return False
    return hmac.compare_digest(digest(value), stored_digest)
