"""A small OpenID Connect relying party on Authlib's Flask client.

One application, configured as any of the demo apps: it signs the user in with the
authorization code flow (PKCE S256, nonce, ``client_secret_basic``), shows the ID token's
``sub``, ``auth_time``, ``acr`` and ``amr``, asks for a step-up to the AAL2 alias, signs out
through RP-initiated logout and ends its local session when the identity provider sends a
back-channel logout token.

Configuration (``create_app(config)``):

``NAME``, ``DESCRIPTION``
    Shown on every page.
``CLIENT_ID``, ``CLIENT_SECRET``
    The client's registration at the identity provider.
``ISSUER``
    The identity provider's issuer; discovery is read from
    ``ISSUER/.well-known/openid-configuration``.
``BASE_URL``
    Where this app is served, e.g. ``http://127.0.0.1:5001``; the redirect URI is
    ``BASE_URL/callback`` and the post-logout redirect URI ``BASE_URL/``.
``REQUIRE_MFA``
    Ask for ``acr_values=urn:idp:acr:mfa`` and refuse a sign-in that did not reach it.
``SECRET_KEY``
    Signs this app's session cookie.

The session (a signed cookie) holds only the claims shown, the ``sid``, and the ID token for
the logout hint. Sessions ended by back-channel logout are remembered in process memory,
which suits a single-process server.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, current_app, jsonify, redirect, render_template, request, session
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

ACR_MFA = "urn:idp:acr:mfa"
ACR_AAL2 = "http://idmanagement.gov/ns/assurance/aal/2"
MFA_ACRS = frozenset({ACR_MFA, ACR_AAL2})
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"

SESSION_LIFETIME = 12 * 3600  # seconds a local sign-in lasts
CLOCK_LEEWAY = 60  # seconds of clock skew allowed on logout tokens
HTTP_TIMEOUT = 10  # seconds for every request to the identity provider

ERROR_EXPLANATIONS = {
    "access_denied": "The sign-in was cancelled or refused.",
    "unmet_authentication_requirements": (
        "The identity provider could not sign you in at the level this app asked for."
    ),
    "login_required": "You need to sign in at the identity provider.",
    "interaction_required": "The identity provider needs you to complete a step on its pages.",
    "consent_required": "The identity provider needs your consent first.",
    "mfa_required": "This app requires multifactor authentication.",
    "state_mismatch": (
        "This sign-in response does not belong to a sign-in started in this browser, or it "
        "was already used."
    ),
    "issuer_mismatch": "The response did not come from the expected identity provider.",
    "provider_unreachable": "The identity provider could not be reached.",
}

USER_KEYS = ("user", "id_token", "signed_in_at")


class EndedSessions:
    """Sessions the identity provider ended by back-channel logout.

    Keyed by ``sid``, or by ``sub`` when a logout token carries no ``sid`` (then every
    local session of that user which began before the token arrived ends). Entries older
    than a local session's lifetime cannot match a live session and are dropped.
    """

    def __init__(self, lifetime: int = SESSION_LIFETIME):
        self._lock = threading.Lock()
        self._lifetime = lifetime
        self._sids: dict[str, float] = {}
        self._subs: dict[str, float] = {}

    def end(self, sid: str | None, sub: str | None) -> None:
        now = time.time()
        with self._lock:
            self._prune(now)
            if sid:
                self._sids[sid] = now
            elif sub:
                self._subs[sub] = now

    def is_ended(self, sid: str | None, sub: str | None, signed_in_at: float) -> bool:
        with self._lock:
            if sid and sid in self._sids:
                return True
            ended_at = self._subs.get(sub) if sub else None
            return ended_at is not None and signed_in_at <= ended_at

    def _prune(self, now: float) -> None:
        horizon = now - self._lifetime
        for table in (self._sids, self._subs):
            for key in [k for k, at in table.items() if at < horizon]:
                del table[key]


class InvalidLogoutToken(Exception):
    """A back-channel logout token that must not be acted upon."""


def create_app(config: dict[str, Any]) -> Flask:
    required = ("NAME", "CLIENT_ID", "CLIENT_SECRET", "ISSUER", "BASE_URL", "SECRET_KEY")
    missing = [key for key in required if not config.get(key)]
    if missing:
        raise ValueError("missing configuration: " + ", ".join(missing))

    app = Flask(__name__)
    app.config.update(
        DESCRIPTION="",
        REQUIRE_MFA=False,
        SCOPE="openid profile email",
        HTTP_TIMEOUT=HTTP_TIMEOUT,
    )
    app.config.update(config)
    app.config["ISSUER"] = app.config["ISSUER"].rstrip("/")
    app.config["BASE_URL"] = app.config["BASE_URL"].rstrip("/")
    # Every app on 127.0.0.1 shares that host's cookies, whatever the port: each one
    # keeps its own cookie name.
    app.config["SESSION_COOKIE_NAME"] = config.get("SESSION_COOKIE_NAME") or (
        "rp_" + re.sub(r"[^A-Za-z0-9]+", "_", app.config["CLIENT_ID"])
    )
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app.config["BASE_URL"].startswith("https://"),
    )

    oauth = OAuth(app)
    oauth.register(
        "idp",
        client_id=app.config["CLIENT_ID"],
        client_secret=app.config["CLIENT_SECRET"],
        server_metadata_url=app.config["ISSUER"] + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": app.config["SCOPE"],
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": "client_secret_basic",
            "default_timeout": app.config["HTTP_TIMEOUT"],
        },
    )
    app.extensions["rp_ended_sessions"] = EndedSessions()

    @app.context_processor
    def _page_context():
        return {"app_name": app.config["NAME"], "description": app.config["DESCRIPTION"]}

    @app.before_request
    def _end_sessions_ended_elsewhere():
        user = session.get("user")
        if not user:
            return
        signed_in_at = session.get("signed_in_at", 0)
        ended = app.extensions["rp_ended_sessions"].is_ended(
            user.get("sid"), user.get("sub"), signed_in_at
        )
        if ended or time.time() - signed_in_at > SESSION_LIFETIME:
            _forget_user()

    @app.after_request
    def _no_store(response):
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.get("/")
    def index():
        notice = session.pop("rp_notice", None)
        if request.args.get("state"):
            try:
                oauth.idp.validate_logout_response()
                notice = "You have signed out."
            except OAuthError:
                pass
        user = session.get("user")
        rows = _claim_rows(user) if user else None
        return render_template("index.html", user=user, rows=rows, notice=notice)

    @app.get("/login")
    def login():
        acr_values = ACR_MFA if app.config["REQUIRE_MFA"] else None
        return _authorize("login", acr_values)

    @app.get("/step-up")
    def step_up():
        return _authorize("step-up", ACR_AAL2)

    @app.get("/callback")
    def callback():
        action = session.get("rp_action", "login")
        if request.args.get("error"):
            return _error_page(request.args["error"],
                               request.args.get("error_description"), action)
        try:
            metadata = oauth.idp.load_server_metadata()
        except requests.RequestException:
            return _error_page("provider_unreachable", None, action, status=502)
        returned_iss = request.args.get("iss")
        if (returned_iss is not None or metadata.get(
                "authorization_response_iss_parameter_supported")) \
                and returned_iss != metadata.get("issuer"):
            return _error_page("issuer_mismatch", None, action)
        try:
            token = oauth.idp.authorize_access_token()
        except MismatchingStateError:
            return _error_page("state_mismatch", None, action)
        except OAuthError as exc:
            return _error_page(exc.error or "invalid_response", exc.description, action)
        except requests.RequestException:
            return _error_page("provider_unreachable", None, action, status=502)
        except JoseError as exc:
            return _error_page("invalid_id_token", str(exc), action)
        claims = token.get("userinfo")
        if not claims:
            return _error_page("invalid_response", "No ID token was returned.", action)
        requested = session.pop("rp_acr_values", None)
        session.pop("rp_action", None)
        if app.config["REQUIRE_MFA"] and claims.get("acr") not in MFA_ACRS:
            return _error_page(
                "mfa_required",
                f"The identity provider reported acr {claims.get('acr')!r}.", "login",
            )
        user = {
            "sub": claims["sub"],
            "auth_time": claims.get("auth_time"),
            "acr": claims.get("acr"),
            "amr": list(claims.get("amr") or []),
            "sid": claims.get("sid"),
            "preferred_username": _preferred_username(oauth, token, claims["sub"]),
        }
        session.update(user=user, id_token=token["id_token"], signed_in_at=time.time())
        if action == "step-up":
            if user["acr"] == requested:
                session["rp_notice"] = "Step-up complete."
            else:
                session["rp_notice"] = (
                    f"The step-up did not reach {requested}; the identity provider "
                    f"reported {user['acr']}."
                )
        return redirect("/")

    @app.get("/logout")
    def logout():
        id_token = session.get("id_token")
        session.clear()
        if not id_token:
            return redirect("/")
        try:
            return oauth.idp.logout_redirect(
                post_logout_redirect_uri=app.config["BASE_URL"] + "/",
                id_token_hint=id_token,
            )
        except requests.RequestException:
            return _error_page("provider_unreachable", None, "login", status=502)

    @app.post("/backchannel-logout")
    def backchannel_logout():
        token = request.form.get("logout_token")
        if not token or len(request.form.getlist("logout_token")) != 1:
            return _logout_error("logout_token is required")
        try:
            claims = _validate_logout_token(oauth.idp, token)
        except InvalidLogoutToken as exc:
            current_app.logger.warning("refused a back-channel logout token: %s", exc)
            return _logout_error(str(exc))
        except requests.RequestException:
            abort(503)
        app.extensions["rp_ended_sessions"].end(claims.get("sid"), claims.get("sub"))
        return "", 200

    return app


# --- helpers --------------------------------------------------------------------------------


def _authorize(action: str, acr_values: str | None):
    oauth = current_app.extensions["authlib.integrations.flask_client"]
    params = {}
    if acr_values:
        params["acr_values"] = acr_values
    session["rp_action"] = action
    session["rp_acr_values"] = acr_values
    try:
        return oauth.idp.authorize_redirect(current_app.config["BASE_URL"] + "/callback",
                                            **params)
    except requests.RequestException:
        return _error_page("provider_unreachable", None, action, status=502)


def _forget_user() -> None:
    for key in USER_KEYS:
        session.pop(key, None)


def _preferred_username(oauth, token: dict, sub: str) -> str | None:
    """The user name from the userinfo endpoint (the ID token carries only ``sub``)."""
    try:
        info = oauth.idp.userinfo(token=token)
    except (requests.RequestException, OAuthError, ValueError):
        return None
    if info.get("sub") != sub:  # OpenID Connect Core §5.3.2
        return None
    name = info.get("preferred_username")
    return name if isinstance(name, str) else None


def _claim_rows(user: dict) -> list[dict[str, str | None]]:
    """The table's rows: claim name, value, and for ``auth_time`` a readable UTC time."""
    auth_time = user.get("auth_time")
    when = None
    if isinstance(auth_time, int | float) and not isinstance(auth_time, bool):
        when = datetime.fromtimestamp(auth_time, UTC)
    return [
        {"name": "sub", "value": str(user.get("sub", ""))},
        {"name": "auth_time", "value": "" if auth_time is None else str(auth_time),
         "readable": when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else None,
         "iso": when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None},
        {"name": "acr", "value": user.get("acr") or ""},
        {"name": "amr", "value": " ".join(str(m) for m in user.get("amr") or [])},
    ]


def _error_page(error: str, description: str | None, action: str, status: int = 400):
    retry = "/step-up" if action == "step-up" and session.get("user") else "/login"
    session.pop("rp_action", None)
    session.pop("rp_acr_values", None)
    return render_template(
        "error.html", error=error, description=description,
        explanation=ERROR_EXPLANATIONS.get(error, "The sign-in did not complete."),
        retry=retry, signed_in=bool(session.get("user")),
    ), status


def _logout_error(description: str):
    response = jsonify(error="invalid_request", error_description=description)
    response.status_code = 400
    return response


def _validate_logout_token(client, token: str) -> dict:
    """OpenID Connect Back-Channel Logout 1.0 §2.6: signature, iss, aud, iat, exp, the
    back-channel event, ``sid`` or ``sub``, and no ``nonce``."""
    metadata = client.load_server_metadata()
    algorithms = [a for a in metadata.get("id_token_signing_alg_values_supported", ["RS256"])
                  if a != "none"]
    try:
        try:
            decoded = jwt.decode(token, KeySet.import_key_set(client.fetch_jwk_set()),
                                 algorithms=algorithms)
        except InvalidKeyIdError:
            decoded = jwt.decode(token, KeySet.import_key_set(client.fetch_jwk_set(force=True)),
                                 algorithms=algorithms)
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidLogoutToken(f"signature not valid ({exc.__class__.__name__})") from exc
    if decoded.header.get("typ", "logout+jwt").lower() not in ("logout+jwt",
                                                               "application/logout+jwt"):
        raise InvalidLogoutToken("not a logout token (typ)")
    claims = decoded.claims
    registry = jwt.JWTClaimsRegistry(
        leeway=CLOCK_LEEWAY,
        iss={"essential": True, "value": metadata["issuer"]},
        aud={"essential": True, "value": current_app.config["CLIENT_ID"]},
        iat={"essential": True},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise InvalidLogoutToken(f"claims not valid ({exc})") from exc
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise InvalidLogoutToken("the back-channel logout event is missing")
    if "nonce" in claims:
        raise InvalidLogoutToken("a logout token carries no nonce")
    sid, sub = claims.get("sid"), claims.get("sub")
    if not (isinstance(sid, str) and sid) and not (isinstance(sub, str) and sub):
        raise InvalidLogoutToken("neither sid nor sub")
    if sid is not None and not isinstance(sid, str):
        raise InvalidLogoutToken("sid is not a string")
    return claims
