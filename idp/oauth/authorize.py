"""The authorization endpoint: validate the request, run the sign-in pipeline, answer.

Errors before the redirect URI is known to be registered are shown on an error page and
never redirected. Every answer sent to the redirect URI (success or error, ``query`` or
``form_post``) carries ``iss`` (RFC 9207) and echoes ``state`` exactly.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from flask import abort, current_app, redirect, render_template, request, url_for
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value

from idp import audit
from idp.auth.acr import AcrLadder, amr_for
from idp.auth.pipeline import AcrRequest, Pipeline, SignInContext, load_context
from idp.auth.sessions import browser_id, current_session, note_client
from idp.errors import InteractionError
from idp.extensions import db
from idp.models import PendingAuthorization
from idp.oauth import keys
from idp.oauth.server import issuer, query_client, server
from idp.security import digest, random_token
from idp.timeutil import epoch, utcnow

RESPONSE_MODES = {"query", "form_post"}
PROMPTS = {"none", "login", "consent", "select_account"}
MAX_PARAM_LENGTH = 4096
MAX_AGE_PATTERN = re.compile(r"[0-9]{1,10}")
# The parameters a pending request keeps; others are ignored (OAuth 2.0, section 3.1).
KNOWN_PARAMS = {
    "response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "response_mode",
    "prompt", "max_age", "ui_locales", "claims_locales", "display", "id_token_hint",
    "login_hint", "acr_values", "claims", "code_challenge", "code_challenge_method",
}


class AuthorizationError(Exception):
    """An error to send back to the client's (already validated) redirect URI."""

    def __init__(self, error: str, description: str = ""):
        super().__init__(description or error)
        self.error, self.description = error, description


def pipeline() -> Pipeline:
    return current_app.extensions["idp.pipeline"]


def ladder() -> AcrLadder:
    return current_app.extensions["idp.acr_ladder"]


# --- responses ------------------------------------------------------------------------


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


# --- the request ----------------------------------------------------------------------


def _single_values() -> tuple[dict[str, str], set[str]]:
    """The request's parameters and the names sent more than once.

    A parameter sent without a value is treated as omitted (RFC 6749, section 3.1).
    """
    source = request.form if request.method == "POST" else request.args
    values, duplicated = {}, set()
    for key in source:
        all_values = source.getlist(key)
        if len(all_values) > 1:
            duplicated.add(key)
        if all_values[0] != "":
            values[key] = all_values[0]
    return values, duplicated


def _check_client_and_redirect(params: dict, duplicated: set[str]):
    """Errors that must not redirect: they are shown to the user instead."""
    if "client_id" in duplicated or "redirect_uri" in duplicated:
        raise InteractionError("The sign-in request is malformed (a parameter is repeated).",
                               title="Invalid sign-in request")
    client_id = params.get("client_id")
    client = query_client(client_id) if client_id and "\x00" not in client_id else None
    if client is None:
        raise InteractionError(
            "The application that sent you here is not registered with this sign-in service.",
            title="Unknown application",
        )
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri or not client.check_redirect_uri(redirect_uri):
        raise InteractionError(
            f"{client.label} sent you here with a return address it has not registered, "
            "so you cannot be sent back to it.",
            title="Invalid return address",
        )
    return client


def _validate_extras(params: dict, duplicated: set[str]) -> dict:
    """Checks Authlib does not make; returns state for the pending request."""
    if duplicated:
        raise AuthorizationError("invalid_request",
                                 f"Repeated parameter: {sorted(duplicated)[0]}.")
    if "request" in params:
        raise AuthorizationError("request_not_supported",
                                 "Request objects are not supported.")
    if "request_uri" in params:
        raise AuthorizationError("request_uri_not_supported",
                                 "request_uri is not supported.")
    for key, value in params.items():
        if len(key) > 100 or len(value) > MAX_PARAM_LENGTH:
            raise AuthorizationError("invalid_request", f"Parameter {key[:40]} is too long.")
        if "\x00" in value:
            raise AuthorizationError("invalid_request", f"Parameter {key[:40]} is malformed.")
    if "response_type" not in params:
        raise AuthorizationError("invalid_request", "response_type is missing.")
    if params["response_type"] != "code":
        raise AuthorizationError("unsupported_response_type", "Only response_type=code is "
                                 "supported.")
    mode = params.get("response_mode")
    if mode is not None and mode not in RESPONSE_MODES:
        raise AuthorizationError("invalid_request", "Unsupported response_mode.")
    prompts = set((params.get("prompt") or "").split())
    if not prompts <= PROMPTS:
        raise AuthorizationError("invalid_request", "Unknown prompt value.")
    if "none" in prompts and len(prompts) > 1:
        raise AuthorizationError("invalid_request", "prompt=none cannot be combined.")
    max_age = params.get("max_age")
    if max_age is not None and not MAX_AGE_PATTERN.fullmatch(max_age):
        raise AuthorizationError("invalid_request", "max_age must be a non-negative integer.")
    if "claims" in params:
        try:
            claims = json.loads(params["claims"])
            if not isinstance(claims, dict):
                raise ValueError
            AcrRequest.from_params(params)
        except (ValueError, AttributeError, TypeError, RecursionError):
            raise AuthorizationError("invalid_request",
                                     "The claims parameter is not valid.") from None
    core_state = {}
    hint = params.get("id_token_hint")
    if hint:
        core_state["id_token_hint_sub"] = _id_token_hint_subject(hint)
    return core_state


def _id_token_hint_subject(hint: str) -> str:
    try:
        token = jwt.decode(hint, keys.verification_keyset(), algorithms=["RS256"])
    except (JoseError, ValueError, TypeError):
        raise AuthorizationError("invalid_request",
                                 "id_token_hint is not an ID token issued here.") from None
    claims = token.claims
    if claims.get("iss") != issuer() or not isinstance(claims.get("sub"), str):
        raise AuthorizationError("invalid_request",
                                 "id_token_hint is not an ID token issued here.")
    return claims["sub"]


def _authlib_grant(params: dict):
    """Authlib's grant for these parameters, validated (response type, scope, PKCE…)."""
    oauth_request = OAuth2Request("GET", issuer() + "/authorize")
    oauth_request.payload = BasicOAuth2Payload(params)
    grant = server.get_authorization_grant(oauth_request)
    redirect_uri = grant.validate_authorization_request()
    return grant, redirect_uri


def start():
    """Handle GET or POST /authorize."""
    if request.method == "POST" and request.mimetype != "application/x-www-form-urlencoded":
        raise InteractionError("The sign-in request must be sent as a form.",
                               title="Invalid sign-in request")
    params, duplicated = _single_values()
    client = _check_client_and_redirect(params, duplicated)
    try:
        core_state = _validate_extras(params, duplicated)
        _authlib_grant(params)
    except AuthorizationError as exc:
        return respond_error(params, exc.error, exc.description)
    except OAuth2Error as exc:
        return respond_error(params, exc.error, exc.description or "")
    essential = AcrRequest.from_params(params).essential
    if essential and not any(value in ladder().by_value for value in essential):
        # No sign-in here can reach these levels: say so before asking anything.
        return respond_error(params, "unmet_authentication_requirements",
                             "The requested authentication level is not supported.")
    now = utcnow()
    pending = PendingAuthorization(
        id=random_token(24),
        browser_digest=digest(browser_id()),
        client_id=client.client_id,
        params={k: v for k, v in params.items() if k in KNOWN_PARAMS},
        state={"core": core_state},
        expires_at=now + timedelta(seconds=current_app.config["IDP_PENDING_LIFETIME"]),
    )
    db.session.add(pending)
    return resume(pending)


def load_pending(pending_id: str) -> PendingAuthorization:
    """The pending request of this browser with that id, or an explanatory error page."""
    known = len(pending_id) < 64 and "\x00" not in pending_id  # never an id we issued
    pending = db.session.get(PendingAuthorization, pending_id) if known else None
    if pending is None or pending.expires_at <= utcnow():
        raise InteractionError(
            "This sign-in page has expired (a sign-in must be finished within a limited "
            "time). Go back to the application and sign in again.",
            title="Sign-in expired",
        )
    if pending.browser_digest != digest(browser_id()):
        raise InteractionError(
            "This sign-in was started in another browser (or this browser's cookies were "
            "cleared since), so it cannot be continued here. Go back to the application in "
            "this browser and sign in again.",
            title="Sign-in started elsewhere",
        )
    if pending.completed_at is not None:
        raise _finished_already()
    return pending


def load_interaction(pending_id: str) -> SignInContext:
    """The sign-in context of this browser's pending request ``pending_id``, its progress
    bound to the user signed in now (``load_context``). A form posted after another user,
    session or authentication event took the sign-in over was filled in for someone else:
    it does nothing, and the browser goes back to the pipeline."""
    ctx = load_context(load_pending(pending_id), current_session())
    if ctx.progress_discarded and request.method == "POST":
        db.session.commit()
        abort(redirect(resume_url(ctx.pending)))
    return ctx


def _finished_already() -> InteractionError:
    return InteractionError(
        "This sign-in was finished already. Go back to the application; if you are not "
        "signed in there, sign in again from the application.",
        title="Sign-in already finished",
    )


def _complete(pending: PendingAuthorization) -> None:
    """Mark the pending request finished, atomically: of several requests finishing the
    same sign-in at once (tabs of one browser, on any instance), only one answers the
    client; the others are told it was finished already."""
    db.session.flush()
    now = utcnow()
    claimed = db.session.execute(
        update(PendingAuthorization)
        .where(PendingAuthorization.id == pending.id,
               PendingAuthorization.completed_at.is_(None))
        .values(completed_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.session.rollback()
        raise _finished_already()
    set_committed_value(pending, "completed_at", now)


def pending_id_of(pending: PendingAuthorization) -> str:
    """The id of a stored pending request, without reloading it after a commit."""
    identity = sa_inspect(pending).identity
    return identity[0] if identity else pending.id


def resume_url(pending: PendingAuthorization) -> str:
    return url_for("oauth.resume", pending_id=pending_id_of(pending))


def continue_sign_in(pending: PendingAuthorization):
    """A step's page is done: run the pipeline again in this request and answer with the
    next step's page (a redirect) or the answer to the client. The same as sending the
    browser to ``resume_url(pending)``, one round trip sooner.

    Under ``response_mode=form_post`` the answer is a page of its own (the form that posts
    to the client): the browser is sent to ``/authorize/resume`` for it, so that reloading
    that page never submits the step's form again."""
    if pending.params.get("response_mode") == "form_post":
        return redirect(resume_url(pending))
    return resume(pending)


def resume(pending: PendingAuthorization):
    """Run the pipeline for a pending request: the next step, or the answer."""
    # load_context binds the request's progress to this session: when the session changed
    # under it (signed out, another user signed in in another tab), it starts over.
    ctx = load_context(pending, current_session())
    prompt_none = "none" in ctx.prompts
    found = pipeline().next_step(ctx)
    for _ in range(len(pipeline().steps)):
        if found is None or not found[0].silent:
            break
        step, reason = found
        audit.record("sign_in_step", user_id=ctx.user.id if ctx.user else None,
                     client_id=pending.client_id, step=step.name, reason=reason)
        step.run_silently(ctx)
        ctx = load_context(pending, current_session())
        found = pipeline().next_step(ctx)
    if found is not None:
        step, reason = found
        audit.record("sign_in_step", user_id=ctx.user.id if ctx.user else None,
                     client_id=pending.client_id, step=step.name, reason=reason)
        if prompt_none:
            _complete(pending)
            db.session.commit()
            return respond_error(pending.params, step.prompt_none_error,
                                 f"User interaction is needed ({reason}).")
        db.session.commit()
        return redirect(url_for(step.endpoint, pending_id=pending_id_of(pending)))
    return _finish(ctx)


def _finish(ctx):
    pending, session, client = ctx.pending, ctx.session, ctx.client
    acr_request = ctx.acr_request
    _complete(pending)
    if acr_request.essential and not any(
        ladder().is_met(v, session, client) for v in acr_request.essential
    ):
        audit.record("authorization_denied", user_id=session.user_id, client_id=client.client_id,
                     reason="essential_acr_unmet")
        db.session.commit()
        return respond_error(pending.params, "unmet_authentication_requirements",
                             "The requested authentication level cannot be met.")
    try:
        grant, redirect_uri = _authlib_grant(pending.params)
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


def deny(pending: PendingAuthorization, reason: str):
    """The user declined (consent or terms): tell the client ``access_denied``."""
    _complete(pending)
    audit.record("authorization_denied", user_id=pending.user_id, client_id=pending.client_id,
                 reason=reason)
    db.session.commit()
    return respond_error(pending.params, "access_denied", "The user declined.")
