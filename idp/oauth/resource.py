"""The resource side: bearer tokens (RFC 6750) and the userinfo endpoint (OIDC Core 5.3)."""

from __future__ import annotations

from types import SimpleNamespace

from authlib.consts import default_json_headers
from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2.rfc6749 import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError, InvalidTokenError
from authlib.oidc.core import UserInfoEndpoint as _UserInfoEndpoint

from idp.extensions import db
from idp.models import Client, find_client
from idp.models.oauth import TokenChecks
from idp.oauth import keys
from idp.oauth.claims import user_claims
from idp.oauth.issuer import issuer
from idp.oauth.tokens import BEARER_TOKEN_COLUMNS, TOKEN_BY_ACCESS, USERS
from idp.security import digest

# --- resource endpoints ---------------------------------------------------------------


class BearerError(OAuth2Error):
    """A refusal by a bearer-protected endpoint, with its RFC 6750 §3 challenge."""

    #: whether the challenge names the error (not when no token was sent at all)
    challenge_has_error = True
    challenge_scope: str | None = None

    def get_headers(self):
        headers = super().get_headers()
        attributes = []
        if self.challenge_has_error:
            attributes.append(f'error="{self.error}"')
            if self.challenge_scope:
                attributes.append(f'scope="{self.challenge_scope}"')
        headers.append(("WWW-Authenticate", " ".join(["Bearer", ", ".join(attributes)]).strip()))
        return headers


class MissingBearerTokenError(BearerError):
    error = "invalid_token"
    description = "An access token is required."
    status_code = 401
    challenge_has_error = False


class MalformedBearerRequestError(BearerError):
    error = "invalid_request"
    status_code = 400


class BearerScopeError(BearerError):
    error = "insufficient_scope"
    description = "The access token does not have the scope this endpoint needs."
    status_code = 403


class UserColumns(SimpleNamespace):
    """A user's stored columns, read-only, as the claims of userinfo read them."""

    def get_user_id(self) -> int:
        return self.id


class BearerToken(TokenChecks):
    """An access token presented to a bearer-protected endpoint, with its user's columns
    (from one query), answering what Authlib's checks ask."""

    def __init__(self, row):
        values = row._mapping
        for name in BEARER_TOKEN_COLUMNS:
            setattr(self, name, values[name])
        self.user = (UserColumns(**{c.name: values["u_" + c.name] for c in USERS.c})
                     if values["user_id"] is not None else None)

    def get_user(self):
        return self.user

    def get_client(self) -> Client | None:
        return find_client(self.client_id)


class TokenBearerValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        if not token_string or len(token_string) > 200:
            return None
        row = db.session.execute(TOKEN_BY_ACCESS, {"digest": digest(token_string)}).first()
        if row is None:
            return None
        token = BearerToken(row)
        if token.user is not None and token.user.disabled:
            return None
        return token

    def validate_token(self, token, scopes, request):
        try:
            super().validate_token(token, scopes, request)
        except InsufficientScopeError:
            error = BearerScopeError()
            error.challenge_scope = " ".join(scopes or [])
            raise error from None


class BearerProtector(ResourceProtector):
    """Accepts the bearer token in the Authorization header or, for POST, in the form body
    (RFC 6750 §2.1, §2.2), never in both and never twice."""

    def acquire_token(self, scopes=None):
        """As Authlib's, without its JSON request object (the request's URL, headers and
        body parsed again): the token is read from Flask's request and nothing else of the
        request is needed. Only scopes are checked (no extra claims)."""
        from flask import g
        from flask import request as flask_request

        token = self.validate_request([scopes] if isinstance(scopes, str) else scopes,
                                      flask_request)
        g.authlib_server_oauth2_token = token
        return token

    def parse_request_authorization(self, request):
        from flask import request as flask_request

        header = request.headers.get("Authorization", "")
        scheme, _, header_token = header.strip().partition(" ")
        uses_header = scheme.lower() == "bearer"
        body_tokens = []
        if flask_request.method == "POST" and flask_request.mimetype == (
            "application/x-www-form-urlencoded"
        ):
            body_tokens = flask_request.form.getlist("access_token")
        if len(body_tokens) > 1 or (uses_header and body_tokens):
            raise MalformedBearerRequestError("Send the access token once, in one place only.")
        if body_tokens:
            token = body_tokens[0]
        elif uses_header:
            token = header_token.strip()
            if not token or " " in token:
                raise MalformedBearerRequestError("The Authorization header is malformed.")
        else:
            raise MissingBearerTokenError()
        return self.get_token_validator("bearer"), token


class UserInfoEndpoint(_UserInfoEndpoint):
    def create_endpoint_request(self, request):
        # The resource protector reads the bearer token from Flask's request itself; an
        # OAuth 2.0 request object (its URL, form and headers parsed) would go unused.
        return None

    def __call__(self, request):
        # Userinfo is answered as JSON, never as a signed JWT (discovery offers no
        # userinfo signing algorithm), so the token's client is not needed here.
        token = self.resource_protector.acquire_token("openid")
        return 200, self.generate_user_info(token.get_user(), token.scope), default_json_headers

    def generate_user_info(self, user, scope):
        if user is None:
            raise InvalidTokenError(description="The access token was not issued to a user.")
        return user_claims(user, scope)

    def get_issuer(self):
        return issuer()

    def resolve_private_key(self):
        return keys.signing_jwk()


