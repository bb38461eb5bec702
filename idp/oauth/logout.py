"""Logout: RP-initiated (``end_session_endpoint``) and back-channel logout tokens."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from authlib.oidc.rpinitiated import EndSessionEndpoint as _EndSessionEndpoint
from flask import current_app, g, request
from joserfc import jwt

from idp import audit, outbound
from idp.auth.sessions import current_session, end_session
from idp.extensions import db
from idp.models import Client, User
from idp.oauth import keys
from idp.oauth.issuer import issuer
from idp.security import random_token

log = logging.getLogger(__name__)

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"




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


# Most back-channel requests in flight at once: a user with many sessions and clients
# cannot make the IdP open a thread per receiver.
MAX_CONCURRENT_LOGOUTS = 16


@dataclass
class _Delivery:
    """One logout token on its way to one client; written by its worker thread only
    until ``done`` is set."""

    client_id: str
    user_id: int
    sid: str
    uri: str
    body: bytes
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    error: str | None = None
    timed_out: bool = False

    def send(self, opener: urllib.request.OpenerDirector, timeout: float) -> None:
        req = urllib.request.Request(  # noqa: S310 - registered https/http URI
            self.uri, data=self.body, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with opener.open(req, timeout=timeout) as resp:
                self.status = resp.status
        except urllib.error.HTTPError as exc:
            self.status = exc.code
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            # The receiver did not answer within its time: the same outcome as a delivery
            # still waiting when the total time is up.
            self.timed_out = isinstance(reason, TimeoutError)
            self.error = str(reason)[:200]
        finally:
            self.done.set()

    @property
    def outcome(self) -> str:
        if not self.done.is_set() or self.timed_out:
            return "timeout"
        if self.status is None:
            return "failed"
        return "delivered" if 200 <= self.status < 300 else "refused"


def total_timeout() -> float:
    """``IDP_BACKCHANNEL_TOTAL_TIMEOUT``: seconds all the back-channel logouts of one
    operation may take together (checked at start-up)."""
    return current_app.config["IDP_BACKCHANNEL_TOTAL_TIMEOUT"]


def send_pending_logouts() -> None:
    """POST a logout token to every client of every session ended so far in this request
    or command (``end_session`` queues them in ``g``). Called after each request, and
    explicitly by account operations that also run from the command line."""
    pending = g.pop("idp_logouts", [])
    if pending:
        send_logouts(pending)


def send_logouts(pending: list[tuple[str, int, list[str]]]) -> None:
    """Send a logout token for each ``(sid, user_id, client_ids)`` to those clients that
    registered a back-channel logout URI, concurrently and within the total time bound.

    A receiver that fails, refuses or does not answer in time is logged and audited; it
    is never an error for the caller. The tokens are signed here, in the caller's thread;
    the worker threads only make the HTTP requests. Commits the audit records.
    """
    deliveries: list[_Delivery] = []
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
            deliveries.append(_Delivery(client.client_id, user_id, sid,
                                        client.backchannel_logout_uri, body))
    if deliveries:
        _deliver_all(deliveries)
    for delivery in deliveries:
        outcome = delivery.outcome
        if outcome != "delivered":
            log.warning("back-channel logout to %s %s: %s", delivery.client_id, outcome,
                        delivery.error or delivery.status or "no answer in time")
        audit.record("backchannel_logout", user_id=delivery.user_id,
                     client_id=delivery.client_id, sid=delivery.sid,
                     status=delivery.status if delivery.done.is_set() else None,
                     outcome=outcome)
    if pending:
        db.session.commit()


def _deliver_all(deliveries: list[_Delivery]) -> None:
    """Send every delivery from a few daemon threads; return when all are done or the
    total time is up (the unfinished ones are left to their threads and count as timed
    out; a delivery not yet started when the time is up is not sent)."""
    total = total_timeout()
    per_request = min(current_app.config["IDP_BACKCHANNEL_TIMEOUT"], total)
    deadline = time.monotonic() + total
    # Built here, in the caller's thread (the workers have no app context): each connection
    # goes only to an address the target policy allows (checked again at every send, since
    # DNS may have changed since registration); a redirect is the answer, never followed.
    opener = outbound.opener(current_app.config, outbound.NoRedirect)
    waiting = iter(deliveries)
    lock = threading.Lock()

    def work() -> None:
        while time.monotonic() < deadline:
            with lock:
                delivery = next(waiting, None)
            if delivery is None:
                return
            delivery.send(opener, per_request)

    for number in range(min(len(deliveries), MAX_CONCURRENT_LOGOUTS)):
        threading.Thread(target=work, name=f"backchannel-logout-{number}", daemon=True).start()
    for delivery in deliveries:
        delivery.done.wait(max(0.0, deadline - time.monotonic()))
