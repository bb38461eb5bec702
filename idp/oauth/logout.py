"""Logout: RP-initiated (``end_session_endpoint``) and back-channel logout tokens."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.parse
import urllib.request

from authlib.oidc.rpinitiated import EndSessionEndpoint as _EndSessionEndpoint
from flask import current_app, g, request
from joserfc import jwt

from idp import audit
from idp.auth.sessions import current_session, end_session
from idp.extensions import db
from idp.models import Client, User
from idp.oauth import keys
from idp.oauth.server import issuer
from idp.security import random_token

log = logging.getLogger(__name__)

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A logout URI answers for itself: a redirect (which urllib would turn into a GET
    to wherever it points) is recorded as the answer, not followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


class EndSessionEndpoint(_EndSessionEndpoint):
    def get_server_jwks(self):
        return keys.jwks()

    def get_algorithms(self):
        return ["RS256"]

    def is_post_logout_redirect_uri_legitimate(self, request_, uri, client, logout_hint):
        # Without an id_token_hint, redirect only after the user confirmed on our page.
        return request.method == "POST" and request.form.get("confirm") == "1"

    def end_session(self, end_session_request):
        row = current_session()
        if row is not None:
            end_session(row, reason="rp_initiated_logout")
            db.session.commit()


def logout_token(client_id: str, sub: str, sid: str) -> str:
    key = keys.active_key()
    now = int(time.time())
    claims = {
        "iss": issuer(),
        "aud": client_id,
        "iat": now,
        "exp": now + 120,
        "jti": random_token(16),
        "sub": sub,
        "sid": sid,
        "events": {BACKCHANNEL_EVENT: {}},
    }
    header = {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, keys.private_key(key))


def send_pending_logouts() -> None:
    """POST a logout token to every client of every session ended in this request."""
    pending = g.pop("idp_logouts", [])
    timeout = current_app.config["IDP_BACKCHANNEL_TIMEOUT"]
    for sid, user_id, client_ids in pending:
        user = db.session.get(User, user_id)
        if user is None or not client_ids:
            continue
        clients = db.session.scalars(
            db.select(Client).where(Client.client_id.in_(client_ids),
                                    Client.backchannel_logout_uri.is_not(None))
        )
        for client in clients:
            body = urllib.parse.urlencode(
                {"logout_token": logout_token(client.client_id, user.sub, sid)}
            ).encode()
            req = urllib.request.Request(  # noqa: S310 - registered https/http URI
                client.backchannel_logout_uri, data=body, method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            try:
                with _opener.open(req, timeout=timeout) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, OSError, ValueError) as exc:
                status = None
                log.warning("back-channel logout to %s failed: %s", client.client_id, exc)
            audit.record("backchannel_logout", user_id=user_id, client_id=client.client_id,
                         sid=sid, status=status)
    if pending:
        db.session.commit()
