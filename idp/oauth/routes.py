"""HTTP endpoints of the OpenID provider."""

from __future__ import annotations

import hashlib
import json
import re

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error
from flask import Blueprint, current_app, render_template, request

from idp import metrics
from idp.config import JWKS_MAX_AGE
from idp.extensions import csrf, db
from idp.models import AUTH_METHODS
from idp.oauth import authorize as authorization_request
from idp.oauth import keys
from idp.oauth.server import SCOPES_SUPPORTED, issuer, server
from idp.public_documents import DISCOVERY_KEY, DISCOVERY_MAX_AGE, cache_headers
from idp.signin import interaction

bp = Blueprint("oauth", __name__)

CLAIMS_SUPPORTED = [
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "at_hash",
    "preferred_username", "name", "updated_at", "email", "email_verified", "phone_number",
    "phone_number_verified",
]


# Algorithms accepted for private_key_jwt client assertions (those joserfc recommends).
CLIENT_ASSERTION_ALGS = ["RS256", "ES256"]


def discovery_document() -> dict:
    base = issuer()
    ladder = current_app.extensions["idp.acr_ladder"]
    return {
        "issuer": base,
        "authorization_endpoint": base + "/authorize",
        "token_endpoint": base + "/token",
        "userinfo_endpoint": base + "/userinfo",
        "jwks_uri": base + "/jwks.json",
        "revocation_endpoint": base + "/revoke",
        "introspection_endpoint": base + "/introspect",
        "end_session_endpoint": base + "/logout",
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": [m for m in AUTH_METHODS
                                                          if m != "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": True,
        "claim_types_supported": ["normal"],
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "acr_values_supported": ladder.values(),
        "prompt_values_supported": ["none", "login", "consent"],
        "display_values_supported": ["page"],
        "ui_locales_supported": ["en"],
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }


def _public_json(body: bytes, etag: str, max_age: int):
    """A JSON document anyone may read and cache, rendered once; ``304`` when the client
    has it already."""
    headers = cache_headers(etag, max_age)
    if "If-None-Match" in request.headers and request.if_none_match.contains(etag):
        return current_app.response_class(status=304, headers=headers)
    return current_app.response_class(body, mimetype="application/json", headers=headers)


@bp.get("/.well-known/openid-configuration")
def discovery():
    # The document depends on the configuration only: rendered once per process (and then
    # answered in front of Flask, idp.public_documents).
    rendered = current_app.extensions.get(DISCOVERY_KEY)
    if rendered is None:
        body = json.dumps(discovery_document(), separators=(",", ":")).encode()
        rendered = (body, hashlib.sha256(body).hexdigest()[:32])
        current_app.extensions[DISCOVERY_KEY] = rendered
    return _public_json(*rendered, max_age=DISCOVERY_MAX_AGE)


@bp.get("/jwks.json")
def jwks():
    published = keys.published()
    return _public_json(published.body, published.etag, max_age=JWKS_MAX_AGE)


@bp.route("/authorize", methods=["GET", "POST"])
@csrf.exempt
def authorize():
    return authorization_request.start()


@bp.get("/authorize/resume/<pending_id>")
def resume(pending_id: str):
    return interaction.run(interaction.load_pending(pending_id))


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _repeated_parameter_error():
    """RFC 6749 §3.1/§3.2: parameters must not be sent more than once."""
    repeated = sorted(k for k in request.form if len(request.form.getlist(k)) > 1)
    if not repeated:
        return None
    name = repeated[0] if re.fullmatch(r"[a-z_]{1,40}", repeated[0]) else "a parameter"
    error = InvalidRequestError(f"Repeated parameter: {name}.")
    return _no_store(server.handle_error_response(None, error))


@bp.post("/token")
@csrf.exempt
def token():
    grant_type = request.form.get("grant_type")
    refused = _repeated_parameter_error()
    if refused is not None:
        metrics.token_grant(grant_type, "invalid_request")
        return refused
    response = server.create_token_response()
    if response.status_code == 200:
        db.session.commit()
        metrics.token_grant(grant_type, "success")
    else:
        db.session.rollback()
        error = (response.get_json(silent=True) or {}).get("error")
        metrics.token_grant(grant_type, error if isinstance(error, str) else "other")
    return _no_store(response)


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf.exempt
def userinfo():
    return _no_store(server.create_endpoint_response("userinfo"))


@bp.post("/revoke")
@csrf.exempt
def revoke():
    refused = _repeated_parameter_error()
    if refused is not None:
        return refused
    return _no_store(server.create_endpoint_response("revocation"))


@bp.post("/introspect")
@csrf.exempt
def introspect():
    refused = _repeated_parameter_error()
    if refused is not None:
        return refused
    return _no_store(server.create_endpoint_response("introspection"))


def send_back_channel_logouts(response):
    """Tell the clients of every session that ended during this request (logout, or
    another user signing in on the same browser)."""
    from idp.oauth.logout import send_pending_logouts

    send_pending_logouts()
    return response


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt
def logout():
    from idp.auth.sessions import current_session

    params = request.form if request.method == "POST" else request.args
    try:
        end_request = server.validate_endpoint_request("end_session")
    except OAuth2Error as exc:
        return render_template(
            "idp/error.html", title="Sign-out request not valid",
            message=(exc.description or "The sign-out request is not valid.")
            + " You have not been signed out; close the browser to end your session.",
        ), 400
    session = current_session()
    hint_matches = (
        end_request.id_token_claims is not None
        and session is not None
        and end_request.id_token_claims.get("sub") == session.user.sub
    )
    confirmed = request.method == "POST" and params.get("confirm") == "1"
    if confirmed:
        from flask_wtf.csrf import validate_csrf
        from wtforms import ValidationError

        try:
            validate_csrf(params.get("csrf_token"))
        except ValidationError:
            return render_template(
                "idp/error.html", title="Page expired",
                message="The sign-out page was open too long. Go back and try again.",
            ), 400
    if session is not None and not hint_matches and not confirmed:
        return render_template("idp/logout_confirm.html", params=params,
                               client=end_request.client)
    response = server.create_endpoint_response("end_session", end_request)
    if response is None:
        return render_template("idp/logged_out.html", client=end_request.client)
    return response
