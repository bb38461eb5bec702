"""Accounts: creating them, and the changes that other parts of the system must hear about
(used by the command line, the demo seed and, next, the admin console)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import argon2
from flask import current_app
from sqlalchemy import or_, select, update

from idp import audit, passwords
from idp.auth.sessions import end_session
from idp.extensions import db
from idp.models import AuthorizationCode, SsoSession, Token, User
from idp.passwords import hash_password
from idp.signals import notice_addresses, password_changed
from idp.timeutil import utcnow

log = logging.getLogger(__name__)


#: How often (seconds) a process looks again for password hashes made with other parameters.
OTHER_PARAMETERS_RECHECK = 600
_OTHER_PARAMETERS = "idp.other_password_parameters"


def other_password_parameters() -> str | None:
    """A hash with the strongest parameters among the stored password hashes made with other
    parameters than the configured ones (an earlier default, before their owners sign in
    again and their hashes are made anew), or None when there are none; what a failed
    password check also spends (``idp.passwords.verify_password``). Looked for at most every
    ``OTHER_PARAMETERS_RECHECK`` seconds per process, with a few reads of the users table."""
    cached = current_app.extensions.get(_OTHER_PARAMETERS)
    now = time.monotonic()
    if cached is not None and now < cached[0]:
        return cached[1]
    known, unusable = [passwords.current_prefix()], []
    strongest = None
    for _ in range(4):  # a few sets of parameters at most: each read excludes those found
        query = select(User.password_hash).where(User.password_hash.is_not(None),
                                                 User.password_hash.not_in(unusable))
        for prefix in known:
            query = query.where(~User.password_hash.startswith(prefix, autoescape=True))
        found = db.session.scalar(query.limit(1))
        if found is None:
            break
        try:
            made = argon2.extract_parameters(found)
        except argon2.exceptions.InvalidHashError:
            unusable.append(found)  # not argon2: it never verifies, nothing to equal
            continue
        known.append(passwords.parameters_prefix(made.memory_cost, made.time_cost,
                                                 made.parallelism))
        if strongest is None or (made.memory_cost * made.time_cost
                                 > strongest.memory_cost * strongest.time_cost):
            strongest = made
    other = (passwords.hashing(strongest.memory_cost, strongest.time_cost,
                               strongest.parallelism).dummy_hash if strongest else None)
    current_app.extensions[_OTHER_PARAMETERS] = (now + OTHER_PARAMETERS_RECHECK, other)
    return other


def create_user(username: str, email: str, password: str, phone: str | None = None,
                created_at: datetime | None = None, name: str | None = None) -> User:
    """A new account (in the caller's transaction); ``created_at`` decides its MFA cohort."""
    user = User(username=username, email=email, phone=phone, name=name,
                password_hash=hash_password(password), created_at=created_at or utcnow())
    db.session.add(user)
    return user


@dataclass(frozen=True)
class Revocation:
    """What ``end_all_sessions_and_revoke`` ended."""

    sessions_ended: int
    tokens_revoked: int
    codes_voided: int


def end_all_sessions_and_revoke(user: User, reason: str, source: str,
                                keep_sid: str | None = None) -> Revocation:
    """End everything the user is signed in with, everywhere: every SSO session (each
    client of each session is sent a back-channel logout token), every access and refresh
    token issued to them, and the authorization codes not yet redeemed. Audited with
    ``reason`` (``password_changed``, ``mfa_reset``, ``user_disabled``) and ``source``.

    Commits, together with what the caller changed before (the account change and its
    consequences are one transaction), then sends the back-channel logouts: concurrently,
    within ``IDP_BACKCHANNEL_TOTAL_TIMEOUT``, in a request as in a command. A relying party
    that is slow or fails is logged and audited, never an error here.

    An email change asked for on the account page and not confirmed yet is cancelled.

    ``keep_sid`` names a session that stays, with the tokens and codes issued in it (the
    account page's own session, where the user changed the password).
    """
    from idp.oauth.logout import send_pending_logouts
    from idp.selfservice import links

    other = [] if keep_sid is None else [SsoSession.sid != keep_sid]
    sessions = db.session.scalars(
        select(SsoSession).where(SsoSession.user_id == user.id, SsoSession.ended_at.is_(None),
                                 *other)
    ).all()
    for row in sessions:
        end_session(row, reason=reason)
    tokens, codes = revoke_tokens_and_codes(user.id, keep_sid=keep_sid)
    # An email change asked for in a session that ends is cancelled with it.
    links.revoke(user.id, links.CHANGE_EMAIL)
    revocation = Revocation(len(sessions), tokens, codes)
    audit.record("sessions_and_tokens_revoked", user_id=user.id, reason=reason, source=source,
                 sessions_ended=revocation.sessions_ended,
                 tokens_revoked=revocation.tokens_revoked, codes_voided=revocation.codes_voided)
    db.session.commit()
    send_pending_logouts()
    return revocation


def revoke_tokens_and_codes(user_id: int, client_id: str | None = None,
                            keep_sid: str | None = None) -> tuple[int, int]:
    """Revoke the user's live access and refresh tokens and void their unredeemed codes (of
    one client, or all; but those issued in the session ``keep_sid``), in the caller's
    transaction. Returns how many tokens and codes."""
    now = utcnow()
    token_rules = [Token.user_id == user_id, Token.revoked_at.is_(None),
                   or_(Token.expires_at > now, Token.refresh_expires_at > now)]
    code_rules = [AuthorizationCode.user_id == user_id, AuthorizationCode.used_at.is_(None),
                  AuthorizationCode.expires_at > now]
    if client_id is not None:
        token_rules.append(Token.client_id == client_id)
        code_rules.append(AuthorizationCode.client_id == client_id)
    if keep_sid is not None:
        token_rules.append(or_(Token.sid.is_(None), Token.sid != keep_sid))
        code_rules.append(or_(AuthorizationCode.sid.is_(None),
                              AuthorizationCode.sid != keep_sid))
    tokens = db.session.execute(update(Token).where(*token_rules).values(revoked_at=now))
    codes = db.session.execute(update(AuthorizationCode).where(*code_rules)
                               .values(expires_at=now))
    return tokens.rowcount, codes.rowcount


def change_password(user: User, new_password: str, source: str,
                    keep_sid: str | None = None) -> int:
    """Set a new password: every SSO session of the user ends (with back-channel logout)
    and every token issued to them is revoked, plugins are told (the MFA plugin forgets
    remembered devices) and a notice goes to the account email.

    ``keep_sid``: the session where the user changed it stays (``end_all_sessions_and_revoke``).
    Returns the number of sessions ended. Commits.
    """
    from idp.delivery import DeliveryError, send_email

    user.password_hash = hash_password(new_password)
    audit.record("password_changed", user_id=user.id, source=source)
    password_changed.send(current_app._get_current_object(), user=user)
    ended = end_all_sessions_and_revoke(user, "password_changed", source,
                                        keep_sid).sessions_ended
    for address in notice_addresses_of(user):
        try:
            send_email(address, "password_changed", {}, kind="notice", user_id=user.id)
        except DeliveryError as exc:
            log.warning("password change notice not sent: %s", exc.reason)
    return ended


def notice_addresses_of(user: User) -> list[str]:
    """Where security notices about the account go: its email, and the addresses plugins
    add (the MFA email)."""
    addresses = [user.email]
    for _receiver, more in notice_addresses.send(current_app._get_current_object(), user=user):
        addresses += [address for address in more or [] if address not in addresses]
    return addresses


def set_disabled(user: User, disabled: bool, source: str) -> Revocation | None:
    """Disable or enable an account. A disabled account cannot sign in, and everything it
    is signed in with ends (``end_all_sessions_and_revoke``), also when it was disabled
    already. Returns what ended (``None`` when enabling). Commits."""
    user.disabled = disabled
    audit.record("user_disabled" if disabled else "user_enabled", user_id=user.id,
                 source=source)
    if disabled:
        return end_all_sessions_and_revoke(user, "user_disabled", source)
    db.session.commit()
    return None
