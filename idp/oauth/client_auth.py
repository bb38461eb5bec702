"""Client authentication by ``private_key_jwt`` (RFC 7523): assertions checked against the
client's keys, each used once."""

from __future__ import annotations

import logging
from datetime import timedelta

from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import current_app, g
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from idp.extensions import db
from idp.models import UsedClientAssertion
from idp.oauth import client_keys
from idp.oauth.issuer import issuer
from idp.timeutil import epoch, from_epoch, utcnow

log = logging.getLogger(__name__)

# --- client authentication ------------------------------------------------------------


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt``: an assertion signed with a key from the client's JWKS."""

    CLIENT_AUTH_METHOD = "private_key_jwt"
    # An assertion is used at once; a longer life only widens the replay window.
    MAX_LIFETIME = 3600

    def __init__(self):
        super().__init__(validate_jti=True)

    def get_audiences(self):
        return [issuer(), issuer() + "/token"]

    def verify_claims(self, claims):
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp > epoch(utcnow()) + self.MAX_LIFETIME:
            raise InvalidClientError(description="The assertion expires too far in the future.")
        super().verify_claims(claims)

    def validate_jti(self, claims, jti):
        if not isinstance(jti, str) or not jti or len(jti) > 200 or "\x00" in jti:
            raise InvalidClientError(description="The assertion's jti is not valid.")
        leeway = timedelta(seconds=current_app.config["IDP_CLIENT_ASSERTION_LEEWAY"])
        db.session.add(UsedClientAssertion(
            client_id=str(claims["sub"]), jti=jti, expires_at=from_epoch(claims["exp"]) + leeway
        ))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return False
        return True

    def extract_assertion(self, assertion: str):
        headers, claims = super().extract_assertion(assertion)
        # The keys are resolved before the signature is checked; the kid says whether
        # the keys fetched from a jwks_uri may be stale (see client_keys).
        kid = headers.get("kid")
        g.idp_assertion_kid = kid if isinstance(kid, str) else None
        return headers, claims

    def resolve_client_public_key(self, client):
        try:
            if client.jwks:
                return KeySet.import_key_set(client.jwks)
            if client.jwks_uri:
                return client_keys.cache(current_app).keyset(
                    client.client_id, client.jwks_uri, g.pop("idp_assertion_kid", None),
                    current_app.config)
        except (client_keys.ClientKeysUnavailable, ValueError, TypeError, KeyError,
                JoseError) as exc:
            log.warning("keys of client %s unusable: %s", client.client_id, exc)
            raise InvalidClientError(
                description="The client's public keys could not be loaded."
            ) from None
        return KeySet([])


