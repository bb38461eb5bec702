"""Password hashing with argon2id, with rehash-on-login when parameters change.

The parameters are settings (``IDP_ARGON2_MEMORY_KIB``, ``IDP_ARGON2_TIME_COST``,
``IDP_ARGON2_PARALLELISM``). The default is a profile of the OWASP password-storage list
(19 MiB, two passes, one lane): one verification keeps one core busy for a few tens of
milliseconds, so a worker serves many more sign-ins than with the library's default
(64 MiB, three passes, four lanes), at the same resistance per guess as OWASP's other
profiles. Production refuses parameters weaker than every profile of that list. Hashes made
with other parameters are upgraded at the owner's next successful sign-in (``needs_rehash``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app, has_app_context

#: OWASP's argon2id profiles (memory in KiB, passes), each with one lane; equivalent in
#: strength, trading memory for time. Production needs at least one of them.
OWASP_PROFILES = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))
DEFAULT_MEMORY_KIB, DEFAULT_TIME_COST, DEFAULT_PARALLELISM = 19456, 2, 1


def meets_owasp_minimum(memory_kib: int, time_cost: int, parallelism: int) -> bool:
    """Whether the parameters are at least as strong as one of OWASP's profiles."""
    return parallelism >= 1 and any(memory_kib >= memory and time_cost >= passes
                                    for memory, passes in OWASP_PROFILES)


@dataclass(frozen=True)
class Hashing:
    hasher: PasswordHasher
    #: Verified when the user name is unknown, so both failures cost the same time.
    dummy_hash: str
    #: How every hash made with these parameters begins.
    prefix: str


@lru_cache(maxsize=8)
def hashing(memory_kib: int = DEFAULT_MEMORY_KIB, time_cost: int = DEFAULT_TIME_COST,
            parallelism: int = DEFAULT_PARALLELISM) -> Hashing:
    """The hasher of these parameters (made once per process: the dummy hash costs one
    hashing)."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                            parallelism=parallelism)
    return Hashing(hasher, hasher.hash("not-a-real-password-used-for-timing-only"),
                   parameters_prefix(memory_kib, time_cost, parallelism))


def init_app(app) -> None:
    config = app.config
    app.extensions["idp.passwords"] = hashing(config["IDP_ARGON2_MEMORY_KIB"],
                                              config["IDP_ARGON2_TIME_COST"],
                                              config["IDP_ARGON2_PARALLELISM"])


def _current() -> Hashing:
    """The application's hasher; outside an application, the default parameters."""
    if has_app_context():
        found = current_app.extensions.get("idp.passwords")
        if found is not None:
            return found
    return hashing()


def hash_password(password: str) -> str:
    return _current().hasher.hash(password)


def verify_password(stored_hash: str | None, password: str,
                    other_parameters: str | None = None) -> bool:
    """True when ``password`` matches ``stored_hash``.

    A failed check costs the same whoever the account is, and whether it exists: one
    verification at the configured parameters and, while some stored hashes were made with
    other parameters (an earlier default, until their owners sign in again), one at those
    (``other_parameters``: a hash made with the strongest of them, see
    ``idp.accounts.other_password_parameters``). A user name unknown, an account with a
    current hash and one with an older hash then take the same time to refuse."""
    current = _current()
    try:
        ok = (current.hasher.verify(stored_hash or current.dummy_hash, password)
              and stored_hash is not None)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok and other_parameters is not None:
        older = stored_hash is not None and not stored_hash.startswith(current.prefix)
        # The other half of the cost (never a match).
        with contextlib.suppress(VerifyMismatchError, VerificationError, InvalidHashError):
            current.hasher.verify(current.dummy_hash if older else other_parameters, "\x00")
    return ok


def parameters_prefix(memory_kib: int, time_cost: int, parallelism: int) -> str:
    """How a hash made with these parameters begins (``$argon2id$v=19$m=…,t=…,p=…$``)."""
    return f"$argon2id$v=19$m={memory_kib},t={time_cost},p={parallelism}$"


def current_prefix() -> str:
    return _current().prefix


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with other parameters than the application's."""
    return _current().hasher.check_needs_rehash(stored_hash)
