"""Consecutive MFA failures per account: after ``IDP_MFA_MAX_FAILURES`` the account cools
down for ``IDP_MFA_LOCKOUT_SECONDS``. A resend never resets the counter; a success does."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import update

from idp import audit
from idp.extensions import db
from idp.timeutil import utcnow
from plugins.mfa import metrics
from plugins.mfa.models import MfaAccount


def account_for(user_id: int) -> MfaAccount:
    account = db.session.get(MfaAccount, user_id)
    if account is None:
        account = MfaAccount(user_id=user_id, failures=0)
        db.session.add(account)
        db.session.flush()
    return account


def locked_until(user_id: int) -> datetime | None:
    account = db.session.get(MfaAccount, user_id)
    if account is None or account.locked_until is None or account.locked_until <= utcnow():
        return None
    return account.locked_until


def record_failure(user_id: int) -> datetime | None:
    """Count a failure atomically; returns the end of the cool-down when it starts now."""
    account_for(user_id)
    db.session.execute(update(MfaAccount).where(MfaAccount.user_id == user_id)
                       .values(failures=MfaAccount.failures + 1))
    account = db.session.get(MfaAccount, user_id, populate_existing=True)
    if account.failures >= current_app.config["IDP_MFA_MAX_FAILURES"]:
        until = utcnow() + timedelta(seconds=current_app.config["IDP_MFA_LOCKOUT_SECONDS"])
        account.locked_until = until
        account.failures = 0
        audit.record("mfa_locked", user_id=user_id, until=until.isoformat())
        metrics.locked_out()
        return until
    return None


def record_success(user_id: int) -> None:
    db.session.execute(update(MfaAccount).where(MfaAccount.user_id == user_id)
                       .values(failures=0))
