"""Remembered devices: a random token in a long-lived cookie, its digest in the database,
bound to one user. All of a user's devices are forgotten when a factor or the password
changes, or when an admin resets MFA."""

from __future__ import annotations

from datetime import timedelta

from flask import after_this_request, current_app, request
from sqlalchemy import update

from idp.plugin_api import audit, db, digest, random_token, utcnow
from plugins.mfa.models import RememberedDevice

COOKIE = "idp_device"


def _lifetime() -> timedelta:
    return timedelta(days=current_app.config["IDP_REMEMBER_DEVICE_DAYS"])


def current_device(user_id: int) -> RememberedDevice | None:
    """This browser's remembered device for ``user_id``, if it is still valid."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    return db.session.scalar(
        db.select(RememberedDevice).filter_by(token_digest=digest(token), user_id=user_id)
        .where(RememberedDevice.forgotten_at.is_(None), RememberedDevice.expires_at > utcnow())
    )


def remember(user_id: int) -> RememberedDevice:
    """Remember this browser for ``user_id``; the cookie is set on the response."""
    token = random_token(32)
    now = utcnow()
    previous = current_device(user_id)
    if previous is not None:
        previous.forgotten_at = now  # this browser gets a new token: one entry per browser
    agent = request.user_agent.string or "Unknown browser"
    device = RememberedDevice(user_id=user_id, token_digest=digest(token), label=agent[:200],
                              created_at=now, last_used_at=now, expires_at=now + _lifetime())
    db.session.add(device)
    audit.record("device_remembered", user_id=user_id)
    lifetime = _lifetime()

    @after_this_request
    def set_cookie(response):
        response.set_cookie(
            COOKIE, token, max_age=int(lifetime.total_seconds()), httponly=True,
            samesite="Lax", secure=current_app.config["IDP_ISSUER"].startswith("https://"),
        )
        return response

    return device


def devices_of(user_id: int) -> list[RememberedDevice]:
    return list(db.session.scalars(
        db.select(RememberedDevice).filter_by(user_id=user_id)
        .where(RememberedDevice.forgotten_at.is_(None), RememberedDevice.expires_at > utcnow())
        .order_by(RememberedDevice.id.desc())
    ))


def forget(user_id: int, device_id: int | None, reason: str) -> int:
    """Forget one device (or all when ``device_id`` is None); returns how many."""
    query = update(RememberedDevice).where(RememberedDevice.user_id == user_id,
                                           RememberedDevice.forgotten_at.is_(None))
    if device_id is not None:
        query = query.where(RememberedDevice.id == device_id)
    count = db.session.execute(query.values(forgotten_at=utcnow())).rowcount
    if count:
        audit.record("devices_forgotten", user_id=user_id, count=count, reason=reason)
    return count
