"""Email verification links: one live link per account (sending a new one revokes the
others), each bound to the user and to the pending sign-in that sent it, and worth nothing
once that sign-in is finished, abandoned or expired."""

from __future__ import annotations

from sqlalchemy import update

from idp.plugin_api import OWNER_STATE, PendingAuthorization, SsoSession, db, progress_owner, utcnow
from plugins.mfa.models import EmailVerification
from plugins.mfa.policy import second_factor_checked
from plugins.mfa.progress import STATE


def _revoke(*conditions) -> int:
    now = utcnow()
    return db.session.execute(
        update(EmailVerification)
        .where(EmailVerification.used_at.is_(None), EmailVerification.expires_at > now,
               *conditions)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def revoke_links_of_user(user_id: int, keep: str | None = None) -> int:
    """Revoke every unused link of the account but the one whose digest is ``keep`` (the
    one just sent)."""
    conditions = [EmailVerification.user_id == user_id]
    if keep is not None:
        conditions.append(EmailVerification.token_digest != keep)
    return _revoke(*conditions)


def revoke_links_of_sign_in(pending_id: str) -> int:
    """Revoke the unused links sent from one pending sign-in."""
    return _revoke(EmailVerification.pending_id == pending_id)


def live_sign_in(row: EmailVerification) -> tuple[PendingAuthorization, SsoSession] | None:
    """The pending sign-in that sent the link and its SSO session, if the link may still act
    for it: not finished, not expired, and its progress still that of the link's user in
    the live session and authentication event that sent the link (not signed out, not taken
    over by another user, no new password check since)."""
    if row.pending_id is None:
        return None
    pending = db.session.get(PendingAuthorization, row.pending_id)
    if pending is None or pending.completed_at is not None or pending.expires_at <= utcnow():
        return None
    owner = (pending.state or {}).get(OWNER_STATE) or {}
    if owner.get("user") != row.user_id or not owner.get("sid"):
        return None
    session = db.session.scalar(db.select(SsoSession).filter_by(sid=owner["sid"]))
    if session is None or not session.is_live or progress_owner(session) != owner:
        return None
    return pending, session


def revoke_token(token_digest: str) -> int:
    """Revoke one link (say, one whose email was never sent)."""
    return _revoke(EmailVerification.token_digest == token_digest)


def sent_for_modify(pending: PendingAuthorization, session: SsoSession,
                    row: EmailVerification) -> bool:
    """Whether the link is the one Modify MFA Options sent on this live sign-in
    (``live_sign_in``), after its user passed the challenge there."""
    mfa = (pending.state or {}).get(STATE) or {}
    return (mfa.get("link_purpose") == "modify" and mfa.get("link_sent_to") == row.address
            and bool(mfa.get("modify_requested")) and bool(mfa.get("challenge_passed"))
            and second_factor_checked(session))
