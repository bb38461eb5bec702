"""The MFA plugin's tables. Secrets are stored as digests (codes, links, device tokens) or
encrypted (the authenticator-app secret); nothing here can be replayed from a database dump."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.plugin_api import db, utcnow


class MfaAccount(db.Model):
    """A user's MFA state: the verified MFA email, the failure counter and the cool-down
    (consecutive failures of any factor, reset when a cool-down starts; the long-run count
    per kind of factor is :class:`FactorFailures`).

    The MFA email is separate from the account email, which MFA never changes.
    """

    __tablename__ = "mfa_accounts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    mfa_email: Mapped[str | None] = mapped_column(String(320))
    mfa_email_verified_at: Mapped[datetime | None] = mapped_column()
    enrolled_at: Mapped[datetime | None] = mapped_column()
    failures: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The method the challenge starts with (chosen on the account page), if any.
    default_kind: Mapped[str | None] = mapped_column(String(20))
    #: A recovery code was used to sign in: until a new method is set up, each sign-in
    #: asks for one.
    recovery_used_at: Mapped[datetime | None] = mapped_column()


class FactorFailures(db.Model):
    """Failed checks of one kind of factor (``sms``, ``email``, ``totp``, ``recovery``) in a
    row since the user's last success, which the cool-down does not reset (NIST SP 800-63B:
    at most ``IDP_MFA_MAX_TOTAL_FAILURES``). Reaching it blocks the kind (``blocked_at``)
    until the user passes another factor, or the help desk resets the user's MFA; blocked
    recovery codes wait for the reset. A success deletes the rows it clears."""

    __tablename__ = "mfa_factor_failures"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    blocked_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MfaFactor(db.Model):
    """An enrolled second factor: ``sms`` (destination = E.164 phone), ``email``
    (destination = MFA email) or ``totp`` (secret encrypted). One of each kind per user."""

    __tablename__ = "mfa_factors"
    __table_args__ = (UniqueConstraint("user_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    destination: Mapped[str | None] = mapped_column(String(320))
    secret_encrypted: Mapped[str | None] = mapped_column(String(500))
    last_step: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()


class Passcode(db.Model):
    """A six-digit code sent by SMS or email, bound to the user, the pending sign-in, the
    factor and the destination. ``code_digest`` is an HMAC keyed by the server."""

    __tablename__ = "mfa_passcodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    pending_id: Mapped[str] = mapped_column(String(64), index=True)
    factor: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(20), default="challenge")
    destination: Mapped[str] = mapped_column(String(320))
    code_digest: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class RecoveryCode(db.Model):
    __tablename__ = "mfa_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column()


class EmailVerification(db.Model):
    """A link that verifies one exact address as the MFA email (random, stored as a digest,
    single use, expiring)."""

    __tablename__ = "mfa_email_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    pending_id: Mapped[str | None] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(320))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


class RememberedDevice(db.Model):
    """A browser that passed MFA: its cookie holds a random token; only the digest is here."""

    __tablename__ = "mfa_remembered_devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    forgotten_at: Mapped[datetime | None] = mapped_column()
