"""Token introspection (RFC 7662)."""

from __future__ import annotations

from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint

from idp.oauth.issuer import issuer
from idp.oauth.tokens import SECRET_AUTH_METHODS, check_token_params, find_token
from idp.timeutil import epoch


class IntrospectionEndpoint(_IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = SECRET_AUTH_METHODS

    def check_params(self, request, client):
        check_token_params(request)

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def check_permission(self, token, client, request):
        # A client may introspect only the tokens issued to it.
        return token.check_client(client)

    def introspect_token(self, token):
        row = token.row
        expires = row.refresh_expires_at if token.kind == "refresh_token" else row.expires_at
        payload = {
            "active": True,
            "client_id": row.client_id,
            "token_type": "refresh_token" if token.kind == "refresh_token" else "Bearer",
            "scope": row.scope,
            "iss": issuer(),
            "aud": row.client_id,
            "iat": epoch(row.issued_at),
            "exp": epoch(expires),
        }
        if row.user is not None:
            payload["sub"] = row.user.sub
            payload["username"] = row.user.username
        if row.acr:
            payload["acr"] = row.acr
        if row.auth_time:
            payload["auth_time"] = row.auth_time
        return payload


