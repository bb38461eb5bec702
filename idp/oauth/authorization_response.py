"""The authorization response (RFC 6749 §4.1.2, OIDC Core 3.1.2.5): the code, or an error,
sent to the client's registered redirect URI.

Every answer (success or error, ``query`` or ``form_post``) carries ``iss`` (RFC 9207) and
echoes ``state`` exactly.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from flask import current_app, redirect, render_template

from idp import audit
from idp.auth.acr import AcrLadder, amr_for
from idp.auth.sessions import note_client
from idp.extensions import db
from idp.oauth.issuer import issuer
from idp.oauth.server import server
from idp.timeutil import epoch

RESPONSE_MODES = {"query", "form_post"}
MAX_PARAM_LENGTH = 4096


def ladder() -> AcrLadder:
    return current_app.extensions["idp.acr_ladder"]


def respond(redirect_uri: str, response_mode: str, params: list[tuple[str, str]]):
    """Send parameters to the client in the requested response mode, with ``iss``."""
    params = [*params, ("iss", issuer())]
    if response_mode == "form_post":
        html = render_template("idp/form_post.html", action=redirect_uri, params=params)
        return current_app.response_class(html, headers={"Cache-Control": "no-store"})
    parts = urlsplit(redirect_uri)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    response = redirect(urlunsplit(parts._replace(query=query)), code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


def respond_error(params: dict, error: str, description: str = ""):
    out = [("error", error)]
    if description:
        out.append(("error_description", description))
    state = params.get("state")
    if state is not None and len(state) <= MAX_PARAM_LENGTH:
        # An oversized state is the error being reported: it is not sent back.
        out.append(("state", state))
    mode = params.get("response_mode")
    return respond(params["redirect_uri"], mode if mode in RESPONSE_MODES else "query", out)


def authlib_grant(params: dict):
    """Authlib's grant for these parameters, validated (response type, scope, PKCE…)."""
    oauth_request = OAuth2Request("GET", issuer() + "/authorize")
    oauth_request.payload = BasicOAuth2Payload(params)
    grant = server.get_authorization_grant(oauth_request)
    redirect_uri = grant.validate_authorization_request()
    return grant, redirect_uri


def answer(ctx):
    """The sign-in is complete (no step is needed): issue the code for what the session
    proved (``acr``, ``amr``, ``auth_time``, ``sid``), or the error that says why not."""
    pending, session, client = ctx.pending, ctx.session, ctx.client
    acr_request = ctx.acr_request
    if acr_request.essential and not any(
        ladder().is_met(v, session, client) for v in acr_request.essential
    ):
        audit.record("authorization_denied", user_id=session.user_id, client_id=client.client_id,
                     reason="essential_acr_unmet")
        db.session.commit()
        return respond_error(pending.params, "unmet_authentication_requirements",
                             "The requested authentication level cannot be met.")
    try:
        grant, redirect_uri = authlib_grant(pending.params)
    except OAuth2Error as exc:
        db.session.commit()
        return respond_error(pending.params, exc.error, exc.description or "")
    sign_in = {
        "auth_time": epoch(session.auth_time),
        "acr": ladder().resolve(session, client, acr_request.all),
        "amr": amr_for(session),
        "sid": session.sid,
    }
    params = grant.issue_code(redirect_uri, session.user, sign_in)
    note_client(session, client.client_id)
    audit.record("authorization_granted", user_id=session.user_id, client_id=client.client_id,
                 acr=sign_in["acr"], amr=sign_in["amr"])
    response_mode = pending.params.get("response_mode") or "query"  # read before the commit
    db.session.commit()
    return respond(redirect_uri, response_mode, params)
