"""Housekeeping: delete rows that can no longer be used (run ``idp maintenance prune``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, or_

from idp.extensions import db
from idp.models import (
    AuthorizationCode,
    PendingAuthorization,
    RateCounter,
    SessionClient,
    SsoSession,
    Token,
    UsedClientAssertion,
)
from idp.timeutil import utcnow

# Rows are kept a while after they stop working, so the audit trail and replay
# detection (a used code or a rotated refresh token coming back) still find them.
GRACE = timedelta(days=7)


def prune(now: datetime | None = None) -> dict[str, int]:
    """Delete expired rows, the core's and those the plugins name (``registry.add_prune``);
    returns how many of each kind went."""
    now = now or utcnow()
    cutoff = now - GRACE
    ended_sessions = db.select(SsoSession.id).where(
        or_(SsoSession.expires_at < cutoff, SsoSession.ended_at < cutoff)
    )
    statements = {
        "pending_authorizations": delete(PendingAuthorization).where(
            PendingAuthorization.expires_at < cutoff
        ),
        "authorization_codes": delete(AuthorizationCode).where(
            AuthorizationCode.expires_at < cutoff
        ),
        "used_client_assertions": delete(UsedClientAssertion).where(
            UsedClientAssertion.expires_at < now
        ),
        "tokens": delete(Token).where(
            Token.expires_at < cutoff,
            or_(Token.refresh_expires_at.is_(None), Token.refresh_expires_at < cutoff,
                and_(Token.revoked_at.is_not(None), Token.revoked_at < cutoff)),
        ),
        # The longest send window is a day: an older counter holds no live event.
        "rate_counters": delete(RateCounter).where(
            RateCounter.updated_at < now - timedelta(days=2)
        ),
        "session_clients": delete(SessionClient).where(
            SessionClient.session_id.in_(ended_sessions)
        ),
        "sso_sessions": delete(SsoSession).where(
            or_(SsoSession.expires_at < cutoff, SsoSession.ended_at < cutoff)
        ),
    }
    from flask import current_app

    from idp.plugins import get_registry

    for plugin_statements in get_registry(current_app).prune_statements:
        for name, statement in plugin_statements(now, cutoff).items():
            if name in statements:
                raise ValueError(f"A plugin's prune statement {name!r} has a name taken "
                                 "already.")
            statements[name] = statement
    counts = {}
    for name, statement in statements.items():
        counts[name] = db.session.execute(statement).rowcount
    db.session.commit()
    return counts
