from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.timeutil import utcnow


class TermsAcceptance(db.Model):
    """A user agreed to a client's Terms and Conditions."""

    __tablename__ = "terms_acceptances"
    __table_args__ = (UniqueConstraint("user_id", "client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    terms_digest: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consent(db.Model):
    """Scopes that need consent (``offline_access``) a user granted to a client."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text, default="")
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
