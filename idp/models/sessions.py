from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.extensions import db
from idp.models.user import User
from idp.timeutil import utcnow


class SsoSession(db.Model):
    """A signed-in browser. The cookie holds a random secret; only its digest is stored.

    ``sid`` is the public session id sent to relying parties (ID token, logout token). It
    stays the same when the cookie secret rotates. ``events`` lists the authentication
    methods checked in the current authentication event: ``{"method", "amr", "factor", "at"}``
    (the password check that starts an event also carries its random ``id``).
    """

    __tablename__ = "sso_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: str(uuid.uuid4()))
    secret_digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[datetime] = mapped_column(default=utcnow)
    events: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    #: The browser and system it was signed in with, in words ("Firefox on Windows").
    browser: Mapped[str | None] = mapped_column(String(200))

    user: Mapped[User] = relationship()

    @property
    def is_live(self) -> bool:
        return self.ended_at is None and self.expires_at > utcnow()


class SessionClient(db.Model):
    """A client that received tokens in a session: it is told when the session ends."""

    __tablename__ = "session_clients"
    __table_args__ = (UniqueConstraint("session_id", "client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sso_sessions.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PendingAuthorization(db.Model):
    """An authorization request waiting for the user to finish the sign-in steps.

    ``id`` travels in the step URLs; ``browser_digest`` binds the request to the browser
    that started it. ``state`` is a dict where steps keep their progress (never secrets),
    bound to the user, session and authentication event that made it (see
    ``idp.signin.context.bind_progress``).
    """

    __tablename__ = "pending_authorizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_digest: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict] = mapped_column(JSON)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    login_at: Mapped[datetime | None] = mapped_column()
    state: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    completed_at: Mapped[datetime | None] = mapped_column()
