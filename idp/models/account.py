from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.timeutil import utcnow


class AccountLink(db.Model):
    """An emailed link of the account pages: it verifies the account email (``verify_email``)
    or resets the password (``reset_password``). Only the SHA-256 digest of its token is
    kept; it works once, for its purpose and its account, until ``expires_at``, and sending a
    new link of the same purpose to the account ends the earlier ones."""

    __tablename__ = "account_links"
    __table_args__ = (Index("ix_account_links_user_purpose", "user_id", "purpose"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    #: The address the link was sent to (a link for an address the account no longer has
    #: verifies nothing).
    address: Mapped[str] = mapped_column(String(320))
    #: The sign-in the user came from, to go back to it once the link did its work.
    pending_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
