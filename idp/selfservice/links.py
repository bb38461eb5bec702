"""Emailed account links: to verify the account email, to reset the password, and to
change the account email (sent to the new address).

A link's token is 32 random bytes; only its SHA-256 digest is stored. A link works once,
for its purpose and its account, until it expires; a new link of the same purpose for the
account ends the earlier ones."""

from __future__ import annotations

from datetime import timedelta

from flask import url_for
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import AccountLink, User
from idp.oauth.issuer import issuer
from idp.security import digest, random_token
from idp.timeutil import utcnow

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose, not a password
CHANGE_EMAIL = "change_email"
ENDPOINTS = {VERIFY_EMAIL: "selfservice.verify_email_link",
             RESET_PASSWORD: "selfservice.reset_password",
             CHANGE_EMAIL: "selfservice.confirm_email_change"}


def new_url(purpose: str) -> tuple[str, str]:
    """A new link's token and URL, not stored yet (``store``)."""
    token = random_token(32)
    # The token travels in the query string, which the access log leaves out.
    return token, issuer() + url_for(ENDPOINTS[purpose], token=token)


def store(user_id: int, address: str, purpose: str, token: str, minutes: int,
          pending_id: str | None = None) -> None:
    """Keep a link's digest (in the caller's transaction)."""
    db.session.add(AccountLink(user_id=user_id, purpose=purpose, token_digest=digest(token),
                               address=address, pending_id=pending_id,
                               expires_at=utcnow() + timedelta(minutes=minutes)))


def issue(user: User, purpose: str, minutes: int,
          pending_id: str | None = None) -> tuple[str, str]:
    """A new link for ``user`` (in the caller's transaction): its token and its URL. The
    earlier links of that purpose end once the new one is sent (``revoke``)."""
    token, url = new_url(purpose)
    store(user.id, user.email, purpose, token, minutes, pending_id)
    return token, url


def _live(*conditions):
    now = utcnow()
    return [AccountLink.used_at.is_(None), AccountLink.expires_at > now, *conditions]


def revoke(user_id: int, purpose: str, keep: str | None = None) -> int:
    """End the account's live links of ``purpose`` but the one whose token is ``keep``."""
    conditions = [AccountLink.user_id == user_id, AccountLink.purpose == purpose]
    if keep is not None:
        conditions.append(AccountLink.token_digest != digest(keep))
    return db.session.execute(
        update(AccountLink).where(*_live(*conditions)).values(expires_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount


def end(token: str) -> None:
    """End one link (say, one whose email could not be sent)."""
    db.session.execute(update(AccountLink).where(AccountLink.token_digest == digest(token))
                       .values(expires_at=utcnow()).execution_options(synchronize_session=False))


def find(token: str, purpose: str) -> AccountLink | None:
    """The live link of ``purpose`` with this token, or None (unknown, used, expired, ended
    by a newer link, or sent to an address the account no longer has; a ``change_email``
    link goes to the address the account is to have)."""
    if not token or len(token) > 100:
        return None
    row = db.session.scalar(select(AccountLink).where(
        *_live(AccountLink.token_digest == digest(token), AccountLink.purpose == purpose)))
    if row is None:
        return None
    user = db.session.get(User, row.user_id)
    if user is None or user.disabled or (purpose != CHANGE_EMAIL and user.email != row.address):
        return None
    return row


def has_live(user_id: int, purpose: str) -> bool:
    found = db.session.scalar(select(AccountLink.id).where(
        *_live(AccountLink.user_id == user_id, AccountLink.purpose == purpose)).limit(1))
    return found is not None


def use(row: AccountLink) -> bool:
    """Mark the link used; False when another request used or ended it first (a link works
    once, also when it is opened twice at the same moment)."""
    return db.session.execute(
        update(AccountLink).where(*_live(AccountLink.id == row.id)).values(used_at=utcnow())
        .execution_options(synchronize_session=False)).rowcount == 1
