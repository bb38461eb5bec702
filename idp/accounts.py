"""Account changes that other parts of the system must hear about."""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import update

from idp import audit
from idp.extensions import db
from idp.models import SsoSession, User
from idp.passwords import hash_password
from idp.signals import password_changed
from idp.timeutil import utcnow

log = logging.getLogger(__name__)


def change_password(user: User, new_password: str, source: str) -> int:
    """Set a new password: every SSO session of the user ends, plugins are told (the MFA
    plugin forgets remembered devices) and a notice goes to the account email.

    Returns the number of sessions ended. Commits.
    """
    from idp.delivery import DeliveryError, send_email

    user.password_hash = hash_password(new_password)
    ended = db.session.execute(
        update(SsoSession).where(SsoSession.user_id == user.id, SsoSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    ).rowcount
    audit.record("password_changed", user_id=user.id, source=source, sessions_ended=ended)
    password_changed.send(current_app._get_current_object(), user=user)
    db.session.commit()
    try:
        send_email(user.email, "password_changed", {}, kind="notice", user_id=user.id)
    except DeliveryError as exc:
        log.warning("password change notice not sent: %s", exc.reason)
    return ended
