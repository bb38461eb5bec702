"""The token endpoint: codes, PKCE, refresh tokens, client credentials and client
authentication, and its answers to malformed requests."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from werkzeug.datastructures import MultiDict

from idp.extensions import db
from idp.models import AuthorizationCode, Client, SsoSession, Token
from idp.timeutil import epoch, utcnow
from tests.conftest import ISSUER, basic_auth, make_client, pkce_pair
from tests.token_helpers import (
    OFFLINE_SCOPE,
    assertion_params,
    client_assertion,
    is_active,
    issue_tokens,
    public_jwks,
    refresh,
    rsa_key,
    service_client,
    userinfo,
)


def id_token_claims(http, id_token) -> dict:
    keyset = KeySet.import_key_set(http.get("/jwks.json").get_json())
    return jwt.decode(id_token, keyset).claims


def assert_error(response, error, status=400):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["error"] == error


# --- codes ------------------------------------------------------------------------------


def test_a_code_can_be_redeemed_only_once(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    assert oidc.token(app_client, secret, code).status_code == 200
    assert_error(oidc.token(app_client, secret, code), "invalid_grant")


def test_replayed_code_revokes_the_tokens_it_issued(client, oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client, scope=OFFLINE_SCOPE)["code"]
    tokens = oidc.token(app_client, secret, code).get_json()
    assert userinfo(client, tokens["access_token"]).status_code == 200

    assert_error(oidc.token(app_client, secret, code), "invalid_grant")

    assert userinfo(client, tokens["access_token"]).status_code == 401
    assert_error(refresh(client, app_client, secret, tokens["refresh_token"]), "invalid_grant")
    assert not is_active(client, app_client, secret, tokens["access_token"])
    assert not is_active(client, app_client, secret, tokens["refresh_token"])


def test_replayed_code_also_revokes_tokens_refreshed_from_it(client, oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client, scope=OFFLINE_SCOPE)["code"]
    first = oidc.token(app_client, secret, code).get_json()
    newer = refresh(client, app_client, secret, first["refresh_token"]).get_json()

    assert_error(oidc.token(app_client, secret, code), "invalid_grant")

    assert userinfo(client, newer["access_token"]).status_code == 401
    assert_error(refresh(client, app_client, secret, newer["refresh_token"]), "invalid_grant")


def test_concurrent_redemptions_of_one_code_give_exactly_one_success(app, oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": app_client.redirect_uris[0], "code_verifier": oidc.verifier}
    headers = basic_auth(app_client.client_id, secret)
    barrier = threading.Barrier(4)
    statuses, errors = [], []

    def redeem():
        http = app.test_client()
        barrier.wait()
        response = http.post("/token", data=data, headers=headers)
        statuses.append(response.status_code)
        if response.status_code != 200:
            errors.append(response.get_json()["error"])

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200, 400, 400, 400]
    assert errors == ["invalid_grant"] * 3


def test_expired_code_is_invalid_grant(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    db.session.execute(db.update(AuthorizationCode).values(
        expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert_error(oidc.token(app_client, secret, code), "invalid_grant")


@pytest.mark.parametrize("app_config", [{"IDP_CODE_LIFETIME": 1}])
def test_code_expires_after_the_configured_lifetime(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    time.sleep(1.1)
    assert_error(oidc.token(app_client, secret, code), "invalid_grant")


def test_code_issued_to_another_client_is_invalid_grant(oidc, rp, alice):
    app_client, secret = rp
    other, other_secret = make_client(client_id="other-app")
    code = oidc.sign_in(app_client)["code"]
    assert_error(oidc.token(other, other_secret, code), "invalid_grant")
    # The legitimate client can still redeem it.
    assert oidc.token(app_client, secret, code).status_code == 200


def test_code_redeemed_with_another_redirect_uri_is_invalid_grant(oidc, rp, alice):
    app_client, secret = rp
    app_client.redirect_uris = ["https://rp.example/cb", "https://rp.example/other"]
    db.session.commit()
    code = oidc.sign_in(app_client)["code"]
    response = oidc.token(app_client, secret, code, redirect_uri="https://rp.example/other")
    assert_error(response, "invalid_grant")


def test_code_redeemed_without_redirect_uri_is_invalid_grant(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    assert_error(oidc.token(app_client, secret, code, redirect_uri=None), "invalid_grant")


def test_unknown_code_is_invalid_grant(oidc, rp, alice):
    app_client, secret = rp
    oidc.sign_in(app_client)
    assert_error(oidc.token(app_client, secret, "not-a-code"), "invalid_grant")


# --- PKCE -------------------------------------------------------------------------------


def test_wrong_code_verifier_is_invalid_grant(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    wrong_verifier, _ = pkce_pair()
    assert_error(oidc.token(app_client, secret, code, code_verifier=wrong_verifier),
                 "invalid_grant")


def test_missing_code_verifier_is_refused_when_a_challenge_was_sent(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    oidc.verifier = None
    assert_error(oidc.token(app_client, secret, code), "invalid_request")


def test_code_verifier_without_a_challenge_is_refused(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client, pkce=False)["code"]
    verifier, _ = pkce_pair()
    assert_error(oidc.token(app_client, secret, code, code_verifier=verifier),
                 "invalid_request")


def test_confidential_client_without_pkce_may_redeem_its_code(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client, pkce=False)["code"]
    assert oidc.token(app_client, secret, code).status_code == 200


# --- the ID token -----------------------------------------------------------------------


def test_id_token_auth_time_is_the_login_time_not_the_code_time(client, oidc, rp, alice):
    app_client, secret = rp
    oidc.sign_in(app_client)
    # The user signed in ten minutes ago; the next code is issued now, by single sign-on.
    login_time = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    db.session.execute(db.update(SsoSession).values(auth_time=login_time))
    db.session.commit()

    response = oidc.follow(oidc.authorize(app_client))
    code = oidc.callback_params(response)["code"]
    body = oidc.token(app_client, secret, code).get_json()

    claims = id_token_claims(client, body["id_token"])
    assert claims["auth_time"] == epoch(login_time)
    assert claims["iat"] - claims["auth_time"] >= 600


def test_id_token_is_signed_for_the_client_with_the_nonce(client, oidc, rp, alice):
    app_client, secret = rp
    body = issue_tokens(oidc, app_client, secret, scope="openid")
    claims = id_token_claims(client, body["id_token"])
    assert claims["iss"] == ISSUER
    assert claims["aud"] == app_client.client_id
    assert claims["nonce"] == oidc.last_params["nonce"]
    assert claims["sub"] == alice.sub


# --- refresh tokens ---------------------------------------------------------------------


def test_refresh_token_rotates_on_each_use_and_the_old_one_is_refused(client, oidc, rp, alice):
    app_client, secret = rp
    first = issue_tokens(oidc, app_client, secret)

    second = refresh(client, app_client, secret, first["refresh_token"])
    assert second.status_code == 200, second.get_json()
    second = second.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert userinfo(client, second["access_token"]).status_code == 200

    third = refresh(client, app_client, secret, second["refresh_token"])
    assert third.status_code == 200, third.get_json()
    assert third.get_json()["refresh_token"] not in (first["refresh_token"],
                                                     second["refresh_token"])


def test_reused_refresh_token_revokes_the_whole_family(client, oidc, rp, alice):
    app_client, secret = rp
    first = issue_tokens(oidc, app_client, secret)
    newest = refresh(client, app_client, secret, first["refresh_token"]).get_json()

    assert_error(refresh(client, app_client, secret, first["refresh_token"]), "invalid_grant")

    assert_error(refresh(client, app_client, secret, newest["refresh_token"]), "invalid_grant")
    assert userinfo(client, newest["access_token"]).status_code == 401
    assert userinfo(client, first["access_token"]).status_code == 401
    assert not is_active(client, app_client, secret, newest["access_token"])


def test_concurrent_refreshes_with_one_token_give_exactly_one_success(app, oidc, rp, alice):
    app_client, secret = rp
    tokens = issue_tokens(oidc, app_client, secret)
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    headers = basic_auth(app_client.client_id, secret)
    barrier = threading.Barrier(4)
    statuses = []

    def use_refresh_token():
        http = app.test_client()
        barrier.wait()
        statuses.append(http.post("/token", data=data, headers=headers).status_code)

    threads = [threading.Thread(target=use_refresh_token) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200, 400, 400, 400]


def test_reuse_in_one_family_does_not_touch_another_sign_in(client, oidc, rp, alice):
    app_client, secret = rp
    stolen = issue_tokens(oidc, app_client, secret)
    other = issue_tokens(oidc, app_client, secret, prompt="login")
    refresh(client, app_client, secret, stolen["refresh_token"])
    refresh(client, app_client, secret, stolen["refresh_token"])
    assert userinfo(client, other["access_token"]).status_code == 200
    assert refresh(client, app_client, secret, other["refresh_token"]).status_code == 200


def test_refreshed_tokens_keep_the_scope_and_may_narrow_it(client, oidc, rp, alice):
    app_client, secret = rp
    first = issue_tokens(oidc, app_client, secret)
    same = refresh(client, app_client, secret, first["refresh_token"]).get_json()
    assert set(same["scope"].split()) == set(OFFLINE_SCOPE.split())
    narrowed = refresh(client, app_client, secret, same["refresh_token"],
                       scope="openid offline_access").get_json()
    assert narrowed["scope"] == "openid offline_access"
    wider = refresh(client, app_client, secret, narrowed["refresh_token"],
                    scope="openid phone offline_access")
    assert_error(wider, "invalid_scope")


def test_refresh_after_a_narrowed_refresh_may_ask_for_the_full_grant_again(client, oidc, rp,
                                                                          alice):
    # RFC 6749 §6: the new refresh token keeps the scope of the one it replaces.
    app_client, secret = rp
    first = issue_tokens(oidc, app_client, secret)
    narrowed = refresh(client, app_client, secret, first["refresh_token"],
                       scope="openid").get_json()
    assert narrowed["scope"] == "openid"
    assert userinfo(client, narrowed["access_token"]).get_json().keys() == {"sub"}
    full = refresh(client, app_client, secret, narrowed["refresh_token"])
    assert full.status_code == 200, full.get_json()
    assert set(full.get_json()["scope"].split()) == set(OFFLINE_SCOPE.split())
    again = refresh(client, app_client, secret, full.get_json()["refresh_token"],
                    scope="openid email")
    assert again.status_code == 200, again.get_json()


def test_refresh_token_of_another_client_is_invalid_grant(client, oidc, rp, alice):
    app_client, secret = rp
    tokens = issue_tokens(oidc, app_client, secret)
    other, other_secret = make_client(client_id="other-app")
    assert_error(refresh(client, other, other_secret, tokens["refresh_token"]), "invalid_grant")
    assert refresh(client, app_client, secret, tokens["refresh_token"]).status_code == 200


def test_expired_refresh_token_is_invalid_grant(client, oidc, rp, alice):
    app_client, secret = rp
    tokens = issue_tokens(oidc, app_client, secret)
    db.session.execute(db.update(Token).values(
        refresh_expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert_error(refresh(client, app_client, secret, tokens["refresh_token"]), "invalid_grant")


def test_refresh_token_is_issued_only_when_offline_access_was_granted(oidc, rp, alice):
    app_client, secret = rp
    body = issue_tokens(oidc, app_client, secret, scope="openid profile email")
    assert "refresh_token" not in body
    body = issue_tokens(oidc, app_client, secret, scope=OFFLINE_SCOPE, prompt="login")
    assert body["refresh_token"]
    assert "offline_access" in body["scope"].split()


def test_no_refresh_token_for_a_client_not_allowed_offline_access(oidc, alice):
    app_client, secret = make_client(scope="openid profile email")
    body = issue_tokens(oidc, app_client, secret, scope=OFFLINE_SCOPE)
    assert "refresh_token" not in body
    assert "offline_access" not in body["scope"].split()


def test_no_refresh_token_for_a_client_without_the_refresh_grant(client, oidc, alice):
    app_client, secret = make_client(grant_types=["authorization_code"])
    body = issue_tokens(oidc, app_client, secret, scope=OFFLINE_SCOPE)
    assert "refresh_token" not in body


def test_refresh_token_can_not_be_used_as_access_token(client, oidc, rp, alice):
    app_client, secret = rp
    tokens = issue_tokens(oidc, app_client, secret)
    assert userinfo(client, tokens["refresh_token"]).status_code == 401


def test_disabled_user_can_not_refresh(client, oidc, rp, alice):
    app_client, secret = rp
    tokens = issue_tokens(oidc, app_client, secret)
    alice.disabled = True
    db.session.commit()
    assert_error(refresh(client, app_client, secret, tokens["refresh_token"]), "invalid_grant")


# --- client credentials -----------------------------------------------------------------


def test_client_credentials_issue_a_token_without_a_user(client):
    service, secret = service_client()
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers=basic_auth(service.client_id, secret))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] > 0
    assert "refresh_token" not in body
    assert "id_token" not in body
    row = db.session.scalar(db.select(Token))
    assert row.user_id is None
    introspection = client.post("/introspect", data={"token": body["access_token"]},
                                headers=basic_auth(service.client_id, secret)).get_json()
    assert introspection["active"] is True
    assert introspection["client_id"] == service.client_id
    assert "sub" not in introspection


def test_client_credentials_never_grant_user_scopes(client):
    service, secret = service_client(scope="openid profile offline_access")
    response = client.post("/token", data={"grant_type": "client_credentials",
                                           "scope": "openid profile offline_access"},
                           headers=basic_auth(service.client_id, secret))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["scope"] == "profile"
    assert "refresh_token" not in body
    assert "id_token" not in body


def test_client_credentials_scope_is_limited_to_the_client_scope(client):
    service, secret = service_client(scope="profile")
    response = client.post("/token", data={"grant_type": "client_credentials",
                                           "scope": "profile email"},
                           headers=basic_auth(service.client_id, secret))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == "profile"


def test_client_credentials_refused_for_a_client_not_registered_for_it(client, rp):
    app_client, secret = rp
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers=basic_auth(app_client.client_id, secret))
    assert_error(response, "unauthorized_client")


def test_service_client_can_not_redeem_codes(client, oidc, rp, alice):
    app_client, _ = rp
    code = oidc.sign_in(app_client)["code"]
    service, secret = service_client()
    response = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": app_client.redirect_uris[0]},
                           headers=basic_auth(service.client_id, secret))
    assert_error(response, "unauthorized_client")


def test_public_client_can_not_use_client_credentials(client):
    public, _ = make_client(auth_method="none", grant_types=["client_credentials"])
    response = client.post("/token", data={"grant_type": "client_credentials",
                                           "client_id": public.client_id})
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


# --- client authentication --------------------------------------------------------------


def client_credentials(http, data=None, headers=None):
    return http.post("/token", data={"grant_type": "client_credentials", **(data or {})},
                     headers=headers or {})


def test_client_secret_basic_authenticates(client):
    service, secret = service_client(auth_method="client_secret_basic")
    response = client_credentials(client, headers=basic_auth(service.client_id, secret))
    assert response.status_code == 200


def test_client_secret_post_authenticates(client):
    service, secret = service_client(auth_method="client_secret_post")
    response = client_credentials(client, {"client_id": service.client_id,
                                           "client_secret": secret})
    assert response.status_code == 200, response.get_json()


def test_client_secret_post_redeems_a_code(oidc, alice):
    app_client, secret = make_client(auth_method="client_secret_post")
    code = oidc.sign_in(app_client)["code"]
    response = oidc.token(app_client, None, code, client_id=app_client.client_id,
                          client_secret=secret)
    assert response.status_code == 200, response.get_json()


def test_wrong_secret_with_basic_is_invalid_client_with_401(client):
    service, secret = service_client()
    response = client_credentials(client, headers=basic_auth(service.client_id, secret + "x"))
    assert_error(response, "invalid_client", 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_unknown_client_with_basic_is_invalid_client_with_401(client):
    response = client_credentials(client, headers=basic_auth("nobody", "secret"))
    assert_error(response, "invalid_client", 401)


def test_wrong_secret_with_post_is_invalid_client(client):
    service, secret = service_client(auth_method="client_secret_post")
    response = client_credentials(client, {"client_id": service.client_id,
                                           "client_secret": secret + "x"})
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_missing_client_authentication_is_invalid_client(client, oidc, rp, alice):
    app_client, _ = rp
    code = oidc.sign_in(app_client)["code"]
    response = oidc.token(app_client, None, code)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"
    response = oidc.token(app_client, None, code, client_id=app_client.client_id)
    assert response.get_json()["error"] == "invalid_client"


def test_basic_client_sending_client_secret_post_is_invalid_client(client):
    service, secret = service_client(auth_method="client_secret_basic")
    response = client_credentials(client, {"client_id": service.client_id,
                                           "client_secret": secret})
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_post_client_sending_client_secret_basic_is_invalid_client(client):
    service, secret = service_client(auth_method="client_secret_post")
    response = client_credentials(client, headers=basic_auth(service.client_id, secret))
    assert_error(response, "invalid_client", 401)


def test_secret_client_sending_a_private_key_jwt_is_invalid_client(client):
    key = rsa_key()
    service, _ = service_client(auth_method="client_secret_basic", jwks=public_jwks(key))
    response = client_credentials(
        client, assertion_params(client_assertion(key, service.client_id)))
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_client_secrets_are_stored_as_sha256_hex_digests(runner):
    result = runner.invoke(args=["clients", "create", "--name", "Digest App",
                                 "--redirect-uri", "https://digest.example/cb", "--json"])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    secret = created["client_secret"]
    assert len(secret) >= 43  # 256 bits, URL-safe base64
    stored = db.session.scalar(db.select(Client).filter_by(client_id=created["client_id"]))
    assert stored.client_secret_digest == hashlib.sha256(secret.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", stored.client_secret_digest)
    assert secret not in json.dumps([stored.client_secret_digest, stored.settings])


# --- private_key_jwt --------------------------------------------------------------------


@pytest.fixture
def jwt_client(app):
    key = rsa_key()
    service, _ = service_client(auth_method="private_key_jwt", jwks=public_jwks(key))
    return service, key


def test_private_key_jwt_authenticates(client, jwt_client):
    service, key = jwt_client
    response = client_credentials(client,
                                  assertion_params(client_assertion(key, service.client_id)))
    assert response.status_code == 200, response.get_json()


def test_private_key_jwt_accepts_the_issuer_as_audience(client, jwt_client):
    service, key = jwt_client
    assertion = client_assertion(key, service.client_id, aud=ISSUER)
    assert client_credentials(client, assertion_params(assertion)).status_code == 200


def test_private_key_jwt_redeems_a_code(oidc, alice):
    key = rsa_key()
    app_client, _ = make_client(auth_method="private_key_jwt", jwks=public_jwks(key))
    code = oidc.sign_in(app_client)["code"]
    response = oidc.token(app_client, None, code,
                          **assertion_params(client_assertion(key, app_client.client_id)))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["id_token"]


def test_private_key_jwt_replayed_jti_is_refused(client, jwt_client):
    service, key = jwt_client
    assertion = client_assertion(key, service.client_id)
    assert client_credentials(client, assertion_params(assertion)).status_code == 200
    response = client_credentials(client, assertion_params(assertion))
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_private_key_jwt_jti_reused_in_a_new_assertion_is_refused(client, jwt_client):
    service, key = jwt_client
    first = client_assertion(key, service.client_id, jti="same-jti")
    assert client_credentials(client, assertion_params(first)).status_code == 200
    again = client_assertion(key, service.client_id, jti="same-jti", iat=int(time.time()) + 1)
    assert client_credentials(client, assertion_params(again)).get_json()["error"] == (
        "invalid_client")


@pytest.mark.parametrize("overrides", [
    pytest.param({"aud": "https://elsewhere.example/token"}, id="wrong-aud"),
    pytest.param({"aud": None}, id="missing-aud"),
    pytest.param({"exp": int(time.time()) - 3600}, id="expired"),
    pytest.param({"exp": None}, id="missing-exp"),
    pytest.param({"jti": None}, id="missing-jti"),
    pytest.param({"iss": "someone-else"}, id="iss-not-sub"),
    pytest.param({"exp": 10**20}, id="absurd-exp"),
    pytest.param({"jti": {"not": "a string"}}, id="non-string-jti"),
    pytest.param({"jti": "j\x00ti"}, id="nul-in-jti"),
    pytest.param({"jti": "j" * 201}, id="overlong-jti"),
])
def test_private_key_jwt_with_bad_claims_is_invalid_client(client, jwt_client, overrides):
    service, key = jwt_client
    assertion = client_assertion(key, service.client_id, **overrides)
    response = client_credentials(client, assertion_params(assertion))
    assert response.status_code in (400, 401), response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"


def test_private_key_jwt_signed_with_an_unregistered_key_is_invalid_client(client, jwt_client):
    service, _ = jwt_client
    assertion = client_assertion(rsa_key(), service.client_id)
    response = client_credentials(client, assertion_params(assertion))
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_private_key_jwt_with_a_malformed_assertion_is_invalid_client(client, jwt_client):
    for assertion in ("not-a-jwt", "a.b.c", "e30.e30.", "x" * 5000):
        response = client_credentials(client, assertion_params(assertion))
        assert response.status_code in (400, 401), assertion
        assert response.get_json()["error"] == "invalid_client"


def test_private_key_jwt_with_unreachable_jwks_uri_is_invalid_client(client):
    key = rsa_key()
    service, _ = service_client(auth_method="private_key_jwt",
                                jwks_uri="http://127.0.0.1:9/jwks.json")
    response = client_credentials(client,
                                  assertion_params(client_assertion(key, service.client_id)))
    assert response.status_code in (400, 401), response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"


def test_private_key_jwt_client_without_keys_is_invalid_client(client):
    key = rsa_key()
    service, _ = service_client(auth_method="private_key_jwt")
    response = client_credentials(client,
                                  assertion_params(client_assertion(key, service.client_id)))
    assert response.status_code in (400, 401), response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"


# --- public clients ---------------------------------------------------------------------


@pytest.fixture
def public_rp(app):
    row, _ = make_client(client_id="public-app", auth_method="none")
    return row


def test_public_client_with_pkce_redeems_its_code(oidc, public_rp, alice):
    code = oidc.sign_in(public_rp)["code"]
    response = oidc.token(public_rp, None, code, client_id=public_rp.client_id)
    assert response.status_code == 200, response.get_json()


def test_public_client_without_code_verifier_is_refused(oidc, public_rp, alice):
    code = oidc.sign_in(public_rp)["code"]
    oidc.verifier = None
    response = oidc.token(public_rp, None, code, client_id=public_rp.client_id)
    assert_error(response, "invalid_request")


def test_public_client_sending_a_secret_is_invalid_client(oidc, public_rp, alice):
    code = oidc.sign_in(public_rp)["code"]
    response = oidc.token(public_rp, None, code, client_id=public_rp.client_id,
                          client_secret="guess")
    assert response.get_json()["error"] == "invalid_client"


def test_public_client_refresh_tokens_rotate(client, oidc, public_rp, alice):
    code = oidc.sign_in(public_rp, scope=OFFLINE_SCOPE)["code"]
    first = oidc.token(public_rp, None, code, client_id=public_rp.client_id).get_json()
    response = refresh(client, public_rp, None, first["refresh_token"],
                       client_id=public_rp.client_id)
    assert response.status_code == 200, response.get_json()
    reused = refresh(client, public_rp, None, first["refresh_token"],
                     client_id=public_rp.client_id)
    assert_error(reused, "invalid_grant")


# --- malformed requests -----------------------------------------------------------------


def test_errors_are_json_and_not_cached(client, rp):
    app_client, secret = rp
    response = client.post("/token", data={"grant_type": "authorization_code", "code": "x",
                                            "redirect_uri": "https://rp.example/cb"},
                           headers=basic_auth(app_client.client_id, secret))
    assert_error(response, "invalid_grant")
    assert response.headers["Pragma"] == "no-cache"


def test_successful_token_response_is_not_cached(oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    response = oidc.token(app_client, secret, code)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_missing_grant_type_is_refused(client, rp):
    app_client, secret = rp
    response = client.post("/token", data={}, headers=basic_auth(app_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] in ("invalid_request", "unsupported_grant_type")
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_grant_type_is_unsupported_grant_type(client, rp):
    app_client, secret = rp
    for grant_type in ("password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"):
        response = client.post("/token", data={"grant_type": grant_type},
                               headers=basic_auth(app_client.client_id, secret))
        assert_error(response, "unsupported_grant_type")


def test_json_body_is_refused_without_a_server_error(client, rp):
    app_client, secret = rp
    response = client.post("/token", json={"grant_type": "client_credentials"},
                           headers=basic_auth(app_client.client_id, secret))
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("body,content_type", [
    (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
    (b"grant_type=authorization_code&code=%ZZ", "application/x-www-form-urlencoded"),
    (b"<xml/>", "application/xml"),
    (b"grant_type=client_credentials", "text/plain"),
    (b"--b\r\nbroken", "multipart/form-data; boundary=b"),
    (b"", ""),
])
def test_malformed_bodies_never_cause_a_server_error(client, rp, body, content_type):
    app_client, secret = rp
    headers = basic_auth(app_client.client_id, secret)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/token", data=body, headers=headers)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert response.mimetype == "application/json"


def test_huge_values_never_cause_a_server_error(client, oidc, rp, alice):
    app_client, secret = rp
    huge = "A" * 200_000
    for field in ("code", "redirect_uri", "code_verifier", "scope", "client_id"):
        data = {"grant_type": "authorization_code", "code": "c",
                "redirect_uri": app_client.redirect_uris[0], field: huge}
        response = client.post("/token", data=data,
                               headers=basic_auth(app_client.client_id, secret))
        assert 400 <= response.status_code < 500, (field, response.status_code)
        assert response.mimetype == "application/json"
    for refresh_token, scope in ((huge, "openid"), ("r", huge)):
        response = refresh(client, app_client, secret, refresh_token, scope=scope)
        assert 400 <= response.status_code < 500, response.status_code
    response = client.post("/token", data={"grant_type": huge},
                           headers=basic_auth(app_client.client_id, secret))
    assert_error(response, "unsupported_grant_type")
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers=basic_auth(huge, huge))
    assert 400 <= response.status_code < 500


def test_malformed_basic_authorization_is_invalid_client(client):
    for value in ("Basic", "Basic !!!", "Basic " + "QQ==", "Bearer abc", "Basic Og=="):
        response = client.post("/token", data={"grant_type": "client_credentials"},
                               headers={"Authorization": value})
        assert response.status_code in (400, 401), value
        assert response.get_json()["error"] == "invalid_client"


def test_repeated_parameters_are_refused(client, oidc, rp, alice):
    app_client, secret = rp
    code = oidc.sign_in(app_client)["code"]
    response = client.post(
        "/token",
        data=MultiDict([("grant_type", "authorization_code"), ("code", code), ("code", "other"),
              ("redirect_uri", app_client.redirect_uris[0]), ("code_verifier", oidc.verifier)]),
        headers=basic_auth(app_client.client_id, secret),
    )
    assert_error(response, "invalid_request")


def test_token_endpoint_answers_get_with_json_405(client):
    response = client.get("/token")
    assert response.status_code == 405
    assert response.mimetype == "application/json"
