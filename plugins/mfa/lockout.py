"""Consecutive MFA failures, counted twice:

- per account, the short run: after ``IDP_MFA_MAX_FAILURES`` the account cools down for
  ``IDP_MFA_LOCKOUT_SECONDS`` (every factor waits) and this count starts again;
- per kind of factor (``sms``, ``email``, ``totp``, ``recovery``), the long run: after
  ``IDP_MFA_MAX_TOTAL_FAILURES`` in a row, cool-downs or not (NIST SP 800-63B: at most 100
  consecutive failed attempts), the kind is blocked (:class:`FactorFailures`).

A success with any factor clears both counts and unblocks every kind except recovery codes,
which only an MFA reset (``idp mfa reset``) unblocks. A resend never resets anything.

Every check of a factor is admitted first::

    attempt = lockout.admit_attempt(user.id, "sms")
    if not attempt.admitted:
        ...                                   # refused: the answer is not even checked
    elif passed:
        lockout.record_success(user.id)
    else:
        started = lockout.record_failure(attempt)   # a Lockout when one starts now
    db.session.commit()

The admission counts the attempt as a failure at once, in the caller's transaction, with one
``UPDATE ... WHERE <not cooling down> RETURNING``: that statement is the lock check, and the
row it updates (on SQLite, the database) stays locked until the caller commits the outcome.
So the checks of one account run one at a time, whatever the number of requests and
instances, and parallel guesses never get past either limit. An attempt that finds nothing
to check (no live passcode) is given back with :func:`release`; one whose transaction is
rolled back counts for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app, g
from sqlalchemy import delete, or_, select, update

from idp.plugin_api import audit, db, dialect_insert, insert_unless_present, utcnow
from plugins.mfa import metrics
from plugins.mfa.models import FactorFailures, MfaAccount

RECOVERY = "recovery"

# How the pages and the notices name a kind of factor that is blocked.
METHOD_NAMES = {
    "sms": "text-message (SMS) passcodes",
    "email": "email passcodes",
    "totp": "your authentication app",
    RECOVERY: "recovery codes",
}

# The ORM objects of the session are not updated by these statements: the readers below
# select the columns.
_UNSYNCED = {"synchronize_session": False}


@dataclass(frozen=True)
class Attempt:
    """One check of a factor of ``kind`` for ``user_id``, as :func:`admit_attempt` answered:
    admitted, or refused because the account cools down (``refusal="cool_down"``) or the
    kind is blocked (``"blocked"``). ``kind`` None counts toward the cool-down only."""

    user_id: int
    kind: str | None
    admitted: bool
    refusal: str | None = None


@dataclass(frozen=True)
class Lockout:
    """What a failure started: the account's cool-down (until when), the block of a kind of
    factor, or both."""

    cool_down_until: datetime | None = None
    blocked: str | None = None


def account_for(user_id: int) -> MfaAccount:
    account = db.session.get(MfaAccount, user_id)
    if account is None:
        account = MfaAccount(user_id=user_id, failures=0)
        db.session.add(account)
        db.session.flush()
    return account


def locked_until(user_id: int) -> datetime | None:
    """The end of the account's cool-down, while it lasts."""
    until = db.session.scalar(select(MfaAccount.locked_until)
                              .where(MfaAccount.user_id == user_id))
    return until if until is not None and until > utcnow() else None


def minutes_left(until: datetime) -> int:
    """The minutes a cool-down still lasts, rounded up (at least one), for the messages."""
    return max(1, int((until - utcnow()).total_seconds() + 59) // 60)


def blocked_kinds(user_id: int) -> set[str]:
    """The kinds of factor blocked after too many failures in a row (read once per request
    or command: the writers below forget it)."""
    known = g.setdefault("idp_mfa_blocked", {})
    if user_id not in known:
        known[user_id] = frozenset(db.session.scalars(
            select(FactorFailures.kind).where(FactorFailures.user_id == user_id,
                                              FactorFailures.blocked_at.is_not(None))))
    return set(known[user_id])


def _blocks_may_change(user_id: int) -> None:
    g.get("idp_mfa_blocked", {}).pop(user_id, None)


def is_blocked(user_id: int, kind: str) -> bool:
    return kind in blocked_kinds(user_id)


def status(user_id: int) -> dict:
    """The lock-out state for the help desk: the cool-down, the blocked kinds (since when)
    and the failures in a row of each kind."""
    until = locked_until(user_id)
    rows = db.session.execute(
        select(FactorFailures.kind, FactorFailures.failures, FactorFailures.blocked_at)
        .where(FactorFailures.user_id == user_id).order_by(FactorFailures.kind)).all()
    return {
        "locked_until": until.isoformat() if until else None,
        "blocked": [{"kind": kind, "since": at.isoformat()} for kind, _, at in rows if at],
        "failures_in_a_row": {kind: failures for kind, failures, _ in rows if failures},
    }


def _limits() -> tuple[int, int]:
    config = current_app.config
    return config["IDP_MFA_MAX_FAILURES"], config["IDP_MFA_MAX_TOTAL_FAILURES"]


def admit_attempt(user_id: int, kind: str | None) -> Attempt:
    """Admit one check of ``kind`` and count it as a failure, unless the account cools down
    or the kind is blocked; only an admitted attempt may be checked. Then
    :func:`record_success`, :func:`record_failure` or :func:`release`, and commit."""
    now = utcnow()
    max_failures, max_total = _limits()
    if not _count_for_account(user_id, now, max_failures):
        return Attempt(user_id, kind, admitted=False, refusal="cool_down")
    if kind is not None and not _count_for_kind(user_id, kind, now, max_total):
        # Taken back at once: this transaction still holds the account's row.
        db.session.execute(update(MfaAccount).where(MfaAccount.user_id == user_id)
                           .values(failures=MfaAccount.failures - 1)
                           .execution_options(**_UNSYNCED))
        return Attempt(user_id, kind, admitted=False, refusal="blocked")
    return Attempt(user_id, kind, admitted=True)


def _count_for_account(user_id: int, now: datetime, max_failures: int) -> bool:
    counted = (update(MfaAccount)
               .where(MfaAccount.user_id == user_id,
                      or_(MfaAccount.locked_until.is_(None), MfaAccount.locked_until <= now),
                      MfaAccount.failures < max_failures)
               .values(failures=MfaAccount.failures + 1)
               .returning(MfaAccount.failures).execution_options(**_UNSYNCED))
    if db.session.execute(counted).first() is not None:
        return True
    row = db.session.execute(select(MfaAccount.locked_until)
                             .where(MfaAccount.user_id == user_id)).first()
    if row is None:  # no MFA state yet: the first failure of the account
        insert_unless_present(MfaAccount, {"user_id": user_id, "failures": 0,
                                           "created_at": now}, ["user_id"])
        return db.session.execute(counted).first() is not None
    if row.locked_until is None or row.locked_until <= now:
        # At the limit without a cool-down (the limit was lowered): it starts now.
        _start_cool_down(user_id, None, now, client_id=None)
    return False


def _count_for_kind(user_id: int, kind: str, now: datetime, max_total: int) -> bool:
    _blocks_may_change(user_id)
    # One statement: the first failure of the kind since the last success, or one more
    # unless the kind is blocked.
    table = FactorFailures.__table__
    counted = db.session.execute(
        dialect_insert(table)
        .values(user_id=user_id, kind=kind, failures=1, updated_at=now)
        .on_conflict_do_update(
            index_elements=[table.c.user_id, table.c.kind],
            set_={"failures": table.c.failures + 1, "updated_at": now},
            where=table.c.blocked_at.is_(None) & (table.c.failures < max_total))
        .returning(table.c.failures)).first()
    if counted is not None:
        return True
    # Blocked, or at the limit without a block (the limit was lowered): blocked from now on.
    _block(user_id, kind, now, client_id=None)
    return False


def _start_cool_down(user_id: int, kind: str | None, now: datetime,
                     client_id: str | None) -> datetime | None:
    until = now + timedelta(seconds=current_app.config["IDP_MFA_LOCKOUT_SECONDS"])
    started = db.session.execute(
        update(MfaAccount)
        .where(MfaAccount.user_id == user_id,
               MfaAccount.failures >= current_app.config["IDP_MFA_MAX_FAILURES"])
        .values(locked_until=until, failures=0)
        .returning(MfaAccount.user_id).execution_options(**_UNSYNCED)).first()
    if started is None:
        return None
    audit.record("mfa_locked", user_id=user_id, client_id=client_id, reason="cool_down",
                 factor=kind, until=until.isoformat())
    metrics.locked_out()
    return until


def _block(user_id: int, kind: str, now: datetime, client_id: str | None) -> bool:
    _blocks_may_change(user_id)
    blocked = db.session.execute(
        update(FactorFailures)
        .where(FactorFailures.user_id == user_id, FactorFailures.kind == kind,
               FactorFailures.blocked_at.is_(None),
               FactorFailures.failures >= current_app.config["IDP_MFA_MAX_TOTAL_FAILURES"])
        .values(blocked_at=now, updated_at=now)
        .returning(FactorFailures.failures).execution_options(**_UNSYNCED)).first()
    if blocked is None:
        return False
    audit.record("mfa_locked", user_id=user_id, client_id=client_id, reason="blocked",
                 factor=kind, failures=blocked[0])
    return True


def record_failure(attempt: Attempt, client_id: str | None = None) -> Lockout | None:
    """The admitted ``attempt`` failed (it is counted already): start the cool-down and the
    block of its kind when their limits are reached. Returns what started now, if anything;
    both are audited (``mfa_locked``, reason ``cool_down`` or ``blocked``)."""
    if not attempt.admitted:
        raise ValueError("only an admitted attempt is checked, and can fail")
    now = utcnow()
    until = _start_cool_down(attempt.user_id, attempt.kind, now, client_id)
    blocked = attempt.kind is not None and _block(attempt.user_id, attempt.kind, now, client_id)
    if until is None and not blocked:
        return None
    return Lockout(cool_down_until=until, blocked=attempt.kind if blocked else None)


def release(attempt: Attempt) -> None:
    """The admitted ``attempt`` had nothing to check (no live passcode): it is not a
    failure of the person."""
    _blocks_may_change(attempt.user_id)
    if not attempt.admitted:
        return
    db.session.execute(update(MfaAccount)
                       .where(MfaAccount.user_id == attempt.user_id, MfaAccount.failures > 0)
                       .values(failures=MfaAccount.failures - 1)
                       .execution_options(**_UNSYNCED))
    if attempt.kind is not None:
        db.session.execute(update(FactorFailures)
                           .where(FactorFailures.user_id == attempt.user_id,
                                  FactorFailures.kind == attempt.kind,
                                  FactorFailures.failures > 0)
                           .values(failures=FactorFailures.failures - 1)
                           .execution_options(**_UNSYNCED))


def record_success(user_id: int) -> None:
    """A factor passed: both counts start again, and every blocked kind but recovery codes
    is unblocked (audited as ``mfa_unblocked``)."""
    _blocks_may_change(user_id)
    db.session.execute(update(MfaAccount).where(MfaAccount.user_id == user_id)
                       .values(failures=0).execution_options(**_UNSYNCED))
    cleared = db.session.execute(
        delete(FactorFailures)
        .where(FactorFailures.user_id == user_id,
               or_(FactorFailures.kind != RECOVERY, FactorFailures.blocked_at.is_(None)))
        .returning(FactorFailures.kind, FactorFailures.blocked_at)
        .execution_options(**_UNSYNCED)).all()
    unblocked = sorted(kind for kind, blocked_at in cleared if blocked_at is not None)
    if unblocked:
        audit.record("mfa_unblocked", user_id=user_id, factors=unblocked, reason="success")


def reset(user_id: int) -> None:
    """The help desk's reset: no cool-down, no count, nothing blocked."""
    _blocks_may_change(user_id)
    db.session.execute(update(MfaAccount).where(MfaAccount.user_id == user_id)
                       .values(failures=0, locked_until=None).execution_options(**_UNSYNCED))
    db.session.execute(delete(FactorFailures).where(FactorFailures.user_id == user_id)
                       .execution_options(**_UNSYNCED))
