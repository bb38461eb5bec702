"""One-time passcodes for SMS and email: six digits from ``secrets``, five minutes, single
use, at most ``IDP_PASSCODE_MAX_ATTEMPTS`` wrong tries each, stored as a keyed digest."""

from __future__ import annotations

import enum
import hmac
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import update

from idp.plugin_api import db, keyed_digest, utcnow
from plugins.mfa.models import Passcode

LIFETIME = timedelta(minutes=5)


class Outcome(enum.Enum):
    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"        # no live code: expired, used, replaced, or never sent
    EXHAUSTED = "exhausted"    # too many wrong tries on this code


def _digest(code: str) -> str:
    return keyed_digest(code, "passcode")


def live_code(user_id: int, pending_id: str, factor: str, purpose: str,
              destination: str) -> Passcode | None:
    """The code still valid for this sign-in, factor and destination, if any."""
    return db.session.scalar(
        db.select(Passcode).filter_by(user_id=user_id, pending_id=pending_id, factor=factor,
                                      purpose=purpose, destination=destination)
        .where(Passcode.used_at.is_(None), Passcode.revoked_at.is_(None),
               Passcode.expires_at > utcnow())
        .order_by(Passcode.id.desc())
    )


def issue(user_id: int, pending_id: str, factor: str, purpose: str, destination: str) -> str:
    """Create a new code (every earlier one of this sign-in and factor dies); returns it.

    The caller commits and then sends it."""
    now = utcnow()
    db.session.execute(
        update(Passcode)
        .where(Passcode.user_id == user_id, Passcode.pending_id == pending_id,
               Passcode.factor == factor, Passcode.purpose == purpose,
               Passcode.used_at.is_(None), Passcode.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    code = f"{secrets.randbelow(1_000_000):06d}"
    db.session.add(Passcode(user_id=user_id, pending_id=pending_id, factor=factor,
                            purpose=purpose, destination=destination,
                            code_digest=_digest(code), expires_at=now + LIFETIME))
    return code


def revoke(user_id: int, pending_id: str, factor: str, purpose: str) -> None:
    """Kill the live codes of this sign-in and factor (say, one that was never delivered)."""
    db.session.execute(
        update(Passcode)
        .where(Passcode.user_id == user_id, Passcode.pending_id == pending_id,
               Passcode.factor == factor, Passcode.purpose == purpose,
               Passcode.used_at.is_(None), Passcode.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def verify(user_id: int, pending_id: str, factor: str, purpose: str, destination: str,
           answer: str) -> Outcome:
    """Check ``answer`` against the live code; a right answer uses the code atomically, so
    of many parallel submissions exactly one succeeds."""
    row = live_code(user_id, pending_id, factor, purpose, destination)
    if row is None:
        return Outcome.EXPIRED
    max_attempts = current_app.config["IDP_PASSCODE_MAX_ATTEMPTS"]
    if row.attempts >= max_attempts:
        return Outcome.EXHAUSTED
    answer = "".join(ch for ch in (answer or "") if not ch.isspace())
    if not (len(answer) == 6 and answer.isascii() and answer.isdigit()
            and hmac.compare_digest(_digest(answer), row.code_digest)):
        tries = row.attempts + 1  # read before the update, which refreshes ``row``
        db.session.execute(update(Passcode).where(Passcode.id == row.id)
                           .values(attempts=Passcode.attempts + 1))
        return Outcome.WRONG if tries < max_attempts else Outcome.EXHAUSTED
    used = db.session.execute(
        update(Passcode)
        .where(Passcode.id == row.id, Passcode.used_at.is_(None), Passcode.revoked_at.is_(None),
               Passcode.attempts < max_attempts)
        .values(used_at=utcnow())
    )
    return Outcome.OK if used.rowcount == 1 else Outcome.EXPIRED


def revoke_for_sign_in(pending_id: str) -> None:
    """Kill every live code of a pending sign-in, whoever it was sent for."""
    db.session.execute(
        update(Passcode)
        .where(Passcode.pending_id == pending_id, Passcode.used_at.is_(None),
               Passcode.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
