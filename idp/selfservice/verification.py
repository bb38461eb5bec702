"""The account email's verification link, sent at Create New Account, when the sign-in
reaches the account email's step, and on request."""

from __future__ import annotations

from flask import current_app

from idp import audit
from idp.delivery import DeliveryError, mask_email, send_email
from idp.extensions import db
from idp.models import User
from idp.selfservice import links


def send_verification(user: User, pending_id: str | None, client) -> str | None:
    """Email a link that verifies the account email (earlier links end once it is sent).
    Returns what to tell the user when it could not be sent. Commits."""
    minutes = current_app.config["IDP_VERIFY_LINK_MINUTES"]
    token, url = links.issue(user, links.VERIFY_EMAIL, minutes, pending_id)
    try:
        send_email(user.email, "verify_account_email", {"link": url, "link_minutes": minutes},
                   kind="link", user_id=user.id, client=client)
    except DeliveryError as exc:
        db.session.rollback()
        links.end(token)  # never sent: it must not work
        db.session.commit()
        return exc.user_message
    links.revoke(user.id, links.VERIFY_EMAIL, keep=token)
    audit.record("account_email_link_sent", user_id=user.id, to=mask_email(user.email),
                 client_id=client.client_id if client is not None else None)
    db.session.commit()
    return None


def send_verification_on_arrival(ctx) -> None:
    """The sign-in reaches the account email's page: send a link unless one still works."""
    if not links.has_live(ctx.user.id, links.VERIFY_EMAIL):
        send_verification(ctx.user, ctx.pending.id, ctx.client)
