"""The grants (RFC 6749 authorization code, refresh token, client credentials) and their
extensions (RFC 7636 PKCE, S256 only; OpenID Connect's ID token)."""

from __future__ import annotations

from datetime import timedelta

from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    grants,
    list_to_scope,
    scope_to_list,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import grants as oidc_grants
from flask import current_app, g

from idp.extensions import db
from idp.models import AUTH_METHODS, AuthorizationCode, User
from idp.models.client import ACCOUNT_CLIENT_ID
from idp.oauth import keys
from idp.oauth.claims import user_claims
from idp.oauth.issuer import issuer
from idp.oauth.tokens import (
    ROTATE_TOKEN,
    SECRET_AUTH_METHODS,
    TOKEN_BY_REFRESH,
    USE_CODE,
    USER_SCOPES,
    new_token,
    revoke_family,
    revoke_tokens_of_code,
)
from idp.security import digest
from idp.timeutil import epoch, utcnow

# --- grants ---------------------------------------------------------------------------


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def issue_code(self, redirect_uri: str, user: User, sign_in: dict) -> list[tuple[str, str]]:
        """Create and store a code for ``user``; return the response parameters."""
        self.request.user = user
        code = self.generate_authorization_code()
        self.save_authorization_code(code, self.request, sign_in)
        params = [("code", code)]
        if self.request.payload.state is not None:
            params.append(("state", self.request.payload.state))
        return params

    def generate_authorization_code(self) -> str:
        return new_token()

    def save_authorization_code(self, code, request, sign_in=None):
        sign_in = sign_in or {}
        data = request.payload.data
        lifetime = timedelta(seconds=current_app.config["IDP_CODE_LIFETIME"])
        db.session.add(AuthorizationCode(
            code_digest=digest(code),
            client_id=request.client.get_client_id(),
            user_id=request.user.id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope or "",
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            auth_time=sign_in.get("auth_time") or epoch(utcnow()),
            acr=sign_in.get("acr"),
            amr=sign_in.get("amr") or [],
            sid=sign_in.get("sid"),
            claims=sign_in.get("claims"),
            expires_at=utcnow() + lifetime,
        ))

    def query_authorization_code(self, code, client):
        if not isinstance(code, str) or len(code) > 200:
            return None
        if client.get_client_id() == ACCOUNT_CLIENT_ID:
            return None  # the account page's codes are never redeemed: it needs no token
        row = db.session.scalar(
            db.select(AuthorizationCode).filter_by(
                code_digest=digest(code), client_id=client.get_client_id()
            )
        )
        if row is None:
            return None
        if row.used_at is not None:
            revoke_tokens_of_code(row)
            raise InvalidGrantError("The authorization code was already used.")
        if row.is_expired():
            return None
        return row

    def delete_authorization_code(self, authorization_code):
        # Mark the code used atomically: of two concurrent redemptions only one wins.
        result = db.session.execute(USE_CODE,
                                    {"code_id": authorization_code.id, "now": utcnow()})
        if result.rowcount != 1:
            revoke_tokens_of_code(authorization_code)
            raise InvalidGrantError("The authorization code was already used.")

    def authenticate_user(self, authorization_code):
        user = db.session.get(User, authorization_code.user_id)
        return None if user is None or user.disabled else user

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None,
                       include_refresh_token=True):
        # A refresh token is issued only for the consented offline_access scope.
        include_refresh_token = include_refresh_token and "offline_access" in scope_to_list(
            scope or ""
        )
        return super().generate_token(user=user, scope=scope, grant_type=grant_type,
                                      expires_in=expires_in,
                                      include_refresh_token=include_refresh_token)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        if not isinstance(refresh_token, str) or len(refresh_token) > 200:
            return None
        row = db.session.scalar(TOKEN_BY_REFRESH, {"digest": digest(refresh_token)})
        if row is None:
            return None
        if row.rotated_at is not None:
            # An old refresh token came back: someone holds a copy. End the whole family.
            revoke_family([row.family_id], "refresh_token_reused", row.client_id)
            return None
        if row.revoked_at is not None or row.is_refresh_expired():
            return None
        if row.user is None or row.user.disabled:
            return None
        return row

    def authenticate_user(self, refresh_token):
        user = refresh_token.user
        return None if user is None or user.disabled else user

    def _validate_token_scope(self, refresh_token):
        # RFC 6749 §6: a refresh may narrow the access token's scope, never widen the grant.
        requested = scope_to_list(self.request.payload.scope or "")
        if not set(requested) <= set(scope_to_list(refresh_token.grant_scope)):
            raise InvalidScopeError()

    def issue_token(self, user, refresh_token):
        # Without a scope the grant's full scope is issued again, even after a narrowed
        # refresh; the new refresh token keeps the grant (RFC 6749 §6).
        scope = self.request.payload.scope or refresh_token.grant_scope
        return self.generate_token(user=user, scope=scope,
                                   include_refresh_token=self.INCLUDE_NEW_REFRESH_TOKEN)

    def revoke_old_credential(self, refresh_token):
        result = db.session.execute(ROTATE_TOKEN,
                                    {"token_id": refresh_token.id, "now": utcnow()})
        if result.rowcount != 1:
            db.session.rollback()
            revoke_family([refresh_token.family_id], "refresh_token_reused",
                          refresh_token.client_id)
            raise InvalidGrantError("The refresh token was already used.")


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_AUTH_METHODS

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None,
                       include_refresh_token=False):
        # No user signs in: no ID token, no userinfo and no offline access.
        scope = list_to_scope([s for s in scope_to_list(scope or "") if s not in USER_SCOPES])
        return super().generate_token(user=user, scope=scope, grant_type=grant_type,
                                      expires_in=expires_in, include_refresh_token=False)


# --- extensions -------------------------------------------------------------------------


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only; required for public clients and clients flagged for it."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        client = grant.request.client
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if not challenge and not method and (client.is_public or client.require_pkce):
            raise InvalidRequestError("This client must use PKCE: send 'code_challenge'.")
        if challenge and method != "S256":
            raise InvalidRequestError("'code_challenge_method' must be 'S256'.")
        return super().validate_code_challenge(grant, redirect_uri)


class OpenIDCode(oidc_grants.OpenIDCode):
    """ID tokens for the code flow, with ``sid`` and the sign-in's acr/amr."""

    def exists_nonce(self, nonce, request):
        # The nonce protects the client; the code itself is single use.
        return False

    def _key(self):
        if "idp_signing_key" not in g:
            g.idp_signing_key = keys.active_key()
        return g.idp_signing_key

    def resolve_client_private_key(self, client):

        return keys.private_key(self._key())

    def get_client_algorithm(self, client):
        return "RS256"

    def get_encode_header(self, client):
        return {"alg": "RS256", "kid": self._key().kid, "typ": "JWT"}

    def get_client_claims(self, client):
        now = epoch(utcnow())
        return {
            "iss": issuer(),
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + current_app.config["IDP_ID_TOKEN_LIFETIME"],
        }

    def get_authorization_code_claims(self, authorization_code):
        claims = super().get_authorization_code_claims(authorization_code)
        if authorization_code.sid:
            claims["sid"] = authorization_code.sid
        return claims

    def generate_user_info(self, user, scope):
        return user_claims(user, scope, for_id_token=True)


