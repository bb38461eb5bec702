"""Token revocation (RFC 7009)."""

from __future__ import annotations

from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint

from idp import audit
from idp.extensions import db
from idp.models import AUTH_METHODS
from idp.oauth.tokens import check_token_params, find_token, revoke_family
from idp.timeutil import utcnow


class RevocationEndpoint(_RevocationEndpoint):
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def check_params(self, request, client):
        check_token_params(request)

    def query_token(self, token_string, token_type_hint):
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        row = token.row
        if token.kind == "refresh_token":
            # Revoking a refresh token ends the grant: every token of its family.
            revoke_family([row.family_id], "refresh_token_revoked", row.client_id)
        else:
            # The access token alone ends now; the refresh token stored beside it belongs to
            # the grant, which only revoking the refresh token ends.
            row.expires_at = min(row.expires_at, utcnow())
            audit.record("token_revoked", user_id=row.user_id, client_id=row.client_id)
            db.session.commit()


