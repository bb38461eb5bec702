"""Single sign-on sessions.

The browser's cookie (Flask's signed session) holds only two opaque random values: the
SSO session secret (whose digest finds the session row) and a browser id that binds
pending authorization requests to the browser that started them.
"""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, g, has_request_context, request, session
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload

from idp import audit
from idp.browsers import describe
from idp.extensions import db, insert_unless_present
from idp.models import SessionClient, SsoSession, User
from idp.security import digest, random_token
from idp.timeutil import epoch, utcnow

COOKIE_SSO = "sso"
COOKIE_BROWSER = "browser"


# The session with its user: nearly every request that finds a session asks for the user.
_SESSION_BY_SECRET = (select(SsoSession).where(SsoSession.secret_digest == bindparam("digest"))
                      .options(joinedload(SsoSession.user)))


def browser_id() -> str:
    """This browser's random id, created on first use."""
    if COOKIE_BROWSER not in session:
        session[COOKIE_BROWSER] = random_token(24)
        session.permanent = True
    return session[COOKIE_BROWSER]


def current_session() -> SsoSession | None:
    """The live SSO session of this browser, if any (one query per request)."""
    if "idp_sso" in g:
        return g.idp_sso
    found = None
    secret = session.get(COOKIE_SSO)
    if isinstance(secret, str):
        row = db.session.scalar(_SESSION_BY_SECRET, {"digest": digest(secret)})
        if row is not None and row.is_live and not row.user.disabled:
            found = row
    g.idp_sso = found
    return found


def _set_secret(row: SsoSession) -> None:
    secret = random_token(32)
    row.secret_digest = digest(secret)
    session[COOKIE_SSO] = secret
    session.permanent = True
    g.idp_sso = row


def record_authentication(user: User, event: dict) -> SsoSession:
    """Record a method checked for ``user`` in this browser's session.

    Starts a new session when there is none or it belongs to someone else. A password
    starts a new authentication event of the session; other methods add to the current
    one. The cookie secret rotates every time, so a secret seen before the sign-in is
    worthless after it.
    """
    now = utcnow()
    event = {**event, "at": epoch(now)}
    if event.get("method") == "pwd":
        event["id"] = random_token(12)  # names the authentication event it starts
    row = current_session()
    if row is not None and row.user_id != user.id:
        end_session(row, reason="other_user_signed_in")
        row = None
    if row is None:
        lifetime = timedelta(seconds=current_app.config["IDP_SESSION_LIFETIME"])
        row = SsoSession(user_id=user.id, events=[], auth_time=now, expires_at=now + lifetime,
                         secret_digest="", browser=describe(request.user_agent.string)[:200])
        db.session.add(row)
    if event.get("method") == "pwd":
        # A password check starts a new authentication event (a first sign-in, or a
        # re-authentication for prompt=login or max_age): what was checked before it no
        # longer counts toward amr or acr, and the sign-ins in progress start over.
        row.events = [event]
        row.auth_time = now
    else:
        # A step-up adds to the current event.
        events = [e for e in (row.events or []) if e.get("method") != event.get("method")]
        row.events = events + [event]
    _set_secret(row)
    return row


def note_client(row: SsoSession, client_id: str) -> None:
    """Remember that ``client_id`` took part in the session (for logout). Several
    authorizations of one session may finish at once (tabs, instances): one row is kept."""
    if row.id is None:
        db.session.flush()
    insert_unless_present(SessionClient, {"session_id": row.id, "client_id": client_id,
                                          "created_at": utcnow()}, ["session_id", "client_id"])


def end_session(row: SsoSession, reason: str) -> list[str]:
    """End a session; returns the client ids to notify by back-channel logout.

    The notices are queued in ``g.idp_logouts``: sent after the request, or by whoever
    ends sessions outside one (``send_pending_logouts``, as ``idp.accounts`` does)."""
    row.ended_at = utcnow()
    audit.record("session_ended", user_id=row.user_id, reason=reason, sid=row.sid)
    if has_request_context() and session.get(COOKIE_SSO) and g.get("idp_sso") is row:
        session.pop(COOKIE_SSO, None)
        g.idp_sso = None
    clients = list(db.session.scalars(
        db.select(SessionClient.client_id).filter_by(session_id=row.id)
    ))
    g.setdefault("idp_logouts", []).append((row.sid, row.user_id, clients))
    return clients
