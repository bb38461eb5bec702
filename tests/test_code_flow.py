"""The authorization code flow with PKCE, end to end through the test client."""

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import ISSUER


def decode_id_token(client, id_token):
    keyset = KeySet.import_key_set(client.get("/jwks.json").get_json())
    return jwt.decode(id_token, keyset).claims


def test_password_sign_in_returns_a_code_with_state_and_iss(oidc, rp, alice):
    params = oidc.sign_in(rp[0])
    assert params["state"] == oidc.last_params["state"]
    assert params["iss"] == ISSUER
    assert params["code"]


def test_code_exchange_returns_an_id_token_with_password_claims(client, oidc, rp, alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client)
    response = oidc.token(app_client, secret, params["code"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    claims = decode_id_token(client, body["id_token"])
    assert claims["iss"] == ISSUER
    assert claims["aud"] == app_client.client_id
    assert claims["sub"] == alice.sub
    assert claims["nonce"] == oidc.last_params["nonce"]
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:idp:acr:pwd"
    assert {"auth_time", "sid", "at_hash", "exp", "iat"} <= set(claims)
