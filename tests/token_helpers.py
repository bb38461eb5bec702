"""Requests a relying party or a resource server makes after the sign-in: token exchange,
refresh, userinfo, revocation and introspection."""

from __future__ import annotations

import secrets
import time

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.conftest import ISSUER, basic_auth, make_client

OFFLINE_SCOPE = "openid profile email offline_access"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def issue_tokens(oidc, rp, secret, scope=OFFLINE_SCOPE, **params) -> dict:
    """Sign alice in to ``rp`` and redeem the code; returns the token response body."""
    code = oidc.sign_in(rp, scope=scope, **params)["code"]
    response = oidc.token(rp, secret, code)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def refresh(http, rp, secret, refresh_token, **extra):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return http.post("/token", data=data, headers=basic_auth(rp.client_id, secret))


def userinfo(http, access_token):
    return http.get("/userinfo", headers=bearer(access_token))


def bearer(access_token) -> dict:
    return {"Authorization": "Bearer " + access_token}


def introspect(http, rp, secret, token, **extra):
    return http.post("/introspect", data={"token": token, **extra},
                     headers=basic_auth(rp.client_id, secret))


def revoke(http, rp, secret, token, **extra):
    return http.post("/revoke", data={"token": token, **extra},
                     headers=basic_auth(rp.client_id, secret))


def is_active(http, rp, secret, token) -> bool:
    response = introspect(http, rp, secret, token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["active"]


def service_client(**kwargs):
    """A client registered only for client_credentials (no redirect, no user)."""
    values = dict(grant_types=["client_credentials"], redirect_uris=[],
                  scope="openid profile email")
    values.update(kwargs)
    return make_client(**values)


def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "k-" + secrets.token_hex(4)})


def public_jwks(key: RSAKey) -> dict:
    return KeySet([key]).as_dict(private=False)


def client_assertion(key: RSAKey, client_id: str, **overrides) -> str:
    """A private_key_jwt assertion; a claim overridden with None is left out."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": ISSUER + "/token",
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def assertion_params(assertion: str) -> dict:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
