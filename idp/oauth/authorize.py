"""The authorization endpoint (RFC 6749 §3.1, OIDC Core 3.1.2.1): validate the request,
store it as a pending sign-in and hand it to the sign-in engine (``idp.signin``).

Errors before the redirect URI is known to be registered are shown on an error page and
never redirected; later ones are answered to the client
(``idp.oauth.authorization_response``).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

from authlib.oauth2.rfc6749 import OAuth2Error
from flask import current_app, request
from joserfc import jwt
from joserfc.errors import JoseError

from idp.auth.sessions import browser_id
from idp.errors import InteractionError
from idp.extensions import db
from idp.models import PendingAuthorization
from idp.models.client import ACCOUNT_CLIENT_ID
from idp.oauth import keys
from idp.oauth.authorization_response import (
    MAX_PARAM_LENGTH,
    RESPONSE_MODES,
    authlib_grant,
    ladder,
    respond_error,
)
from idp.oauth.issuer import issuer
from idp.oauth.tokens import query_client
from idp.security import digest, random_token
from idp.signin.context import AcrRequest
from idp.signin.interaction import run
from idp.timeutil import utcnow

PROMPTS = {"none", "login", "consent", "select_account"}
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
    if client.client_id == ACCOUNT_CLIENT_ID:
        # The account page's own client signs in only from the account page.
        raise InteractionError("To manage your account, go to your account page.",
                               title="Invalid sign-in request")
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


def start():
    """Handle GET or POST /authorize."""
    if request.method == "POST" and request.mimetype != "application/x-www-form-urlencoded":
        raise InteractionError("The sign-in request must be sent as a form.",
                               title="Invalid sign-in request")
    params, duplicated = _single_values()
    client = _check_client_and_redirect(params, duplicated)
    try:
        core_state = _validate_extras(params, duplicated)
        authlib_grant(params)
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
    return run(pending)
