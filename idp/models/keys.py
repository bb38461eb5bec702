from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.timeutil import utcnow


class SigningKey(db.Model):
    """A key that signs ID tokens and logout tokens.

    Exactly one key is ``active``; retired keys stay published until ``publish_until`` so
    tokens they signed can still be verified.
    """

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(100), unique=True)
    alg: Mapped[str] = mapped_column(String(20), default="RS256")
    # The private key as JSON, encrypted with IDP_ENCRYPTION_KEY (see idp.crypto).
    private_jwk_encrypted: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column()
    publish_until: Mapped[datetime | None] = mapped_column()
