"""Password hashing with argon2id, with rehash-on-login when parameters change."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()
# Verified when the user name is unknown, so both failures cost the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password-used-for-timing-only")


def configure(time_cost: int | None = None, memory_cost: int | None = None) -> None:
    """Change the hashing parameters (tests use cheap ones; stored hashes are upgraded)."""
    global _hasher, _DUMMY_HASH
    kwargs = {}
    if time_cost:
        kwargs["time_cost"] = time_cost
    if memory_cost:
        kwargs["memory_cost"] = memory_cost
    _hasher = PasswordHasher(**kwargs)
    _DUMMY_HASH = _hasher.hash("not-a-real-password-used-for-timing-only")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; always spends one argon2id verification."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
