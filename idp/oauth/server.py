"""The authorization server: Authlib's framework assembled with our storage and our stricter
rules (tokens.py, grants.py, client_auth.py, resource.py, revocation.py, introspection.py).

Where Authlib is more lenient than we want, those modules close the gap:
- PKCE accepts only S256, and is required for public clients and flagged clients;
- used codes are kept (marked used), so a replayed code revokes what it issued;
- refresh tokens rotate atomically and reuse revokes the whole family;
- every secret (code, access token, refresh token) is stored as a SHA-256 digest.
"""

from __future__ import annotations

from authlib.integrations.flask_oauth2 import AuthorizationServer
from flask import current_app
from werkzeug.local import LocalProxy

from idp.oauth import client_keys
from idp.oauth.client_auth import PrivateKeyJWT
from idp.oauth.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    OpenIDCode,
    RefreshTokenGrant,
    S256CodeChallenge,
)
from idp.oauth.introspection import IntrospectionEndpoint
from idp.oauth.issuer import issuer
from idp.oauth.resource import BearerProtector, TokenBearerValidator, UserInfoEndpoint
from idp.oauth.revocation import RevocationEndpoint
from idp.oauth.tokens import new_token, query_client, save_token

__all__ = ["SCOPES_SUPPORTED", "init_app", "issuer", "query_client", "server"]

# --- assembly -------------------------------------------------------------------------

SCOPES_SUPPORTED = ["openid", "profile", "email", "phone", "offline_access"]

# The application's authorization server (one per application, built by ``init_app``).
server: AuthorizationServer = LocalProxy(lambda: current_app.extensions["idp.oauth_server"])


def init_app(app) -> None:
    from idp.oauth.logout import EndSessionEndpoint

    lifetime = app.config["IDP_ACCESS_TOKEN_LIFETIME"]
    app.config.setdefault("OAUTH2_ACCESS_TOKEN_GENERATOR", new_token)
    app.config.setdefault("OAUTH2_REFRESH_TOKEN_GENERATOR", new_token)
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {
        "authorization_code": lifetime,
        "refresh_token": lifetime,
        "client_credentials": lifetime,
    })
    app.config.setdefault("OAUTH2_SCOPES_SUPPORTED", SCOPES_SUPPORTED)
    authorization_server = AuthorizationServer()
    authorization_server.init_app(app, query_client=query_client, save_token=save_token)
    authorization_server.register_grant(
        AuthorizationCodeGrant, [S256CodeChallenge(required=True), OpenIDCode(require_nonce=False)]
    )
    authorization_server.register_grant(RefreshTokenGrant)
    authorization_server.register_grant(ClientCredentialsGrant)
    authorization_server.register_client_auth_method("private_key_jwt", PrivateKeyJWT())
    authorization_server.register_endpoint(RevocationEndpoint)
    authorization_server.register_endpoint(IntrospectionEndpoint)
    protector = BearerProtector()
    protector.register_token_validator(TokenBearerValidator())
    authorization_server.register_endpoint(UserInfoEndpoint(resource_protector=protector))
    authorization_server.register_endpoint(EndSessionEndpoint)
    app.extensions["idp.oauth_server"] = authorization_server
    app.extensions["idp.client_keys"] = client_keys.ClientKeyCache()
