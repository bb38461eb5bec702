"""The services a token opens: userinfo (OIDC Core §5.3), revocation (RFC 7009) and
introspection (RFC 7662)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from werkzeug.datastructures import MultiDict

from idp.extensions import db
from idp.models import Token
from idp.timeutil import epoch, utcnow
from tests.conftest import basic_auth, make_client, make_user
from tests.token_helpers import (
    OFFLINE_SCOPE,
    bearer,
    introspect,
    is_active,
    issue_tokens,
    refresh,
    revoke,
    service_client,
    userinfo,
)


def assert_invalid_token(response):
    assert response.status_code == 401, response.get_data(as_text=True)
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer")
    assert 'error="invalid_token"' in challenge
    assert response.headers["Cache-Control"] == "no-store"


@pytest.fixture
def tokens(oidc, rp, alice):
    app_client, secret = rp
    return issue_tokens(oidc, app_client, secret)


@pytest.fixture
def other_rp(app):
    return make_client(client_id="other-app")


# --- userinfo -------------------------------------------------------------------------


def test_userinfo_by_get_with_the_authorization_header(client, tokens, alice):
    response = client.get("/userinfo", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["sub"] == alice.sub
    assert body["preferred_username"] == "alice"
    assert body["email"] == "alice@example.com"


def test_userinfo_by_post_with_the_authorization_header(client, tokens, alice):
    response = client.post("/userinfo", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["sub"] == alice.sub


def test_userinfo_by_post_with_the_token_in_the_form_body(client, tokens, alice):
    response = client.post("/userinfo", data={"access_token": tokens["access_token"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["sub"] == alice.sub


def test_userinfo_token_in_the_query_string_is_not_accepted(client, tokens):
    response = client.get("/userinfo?access_token=" + tokens["access_token"])
    assert response.status_code in (400, 401)
    assert "sub" not in (response.get_json() or {})


def test_userinfo_token_in_both_header_and_body_is_invalid_request(client, tokens):
    response = client.post("/userinfo", data={"access_token": tokens["access_token"]},
                           headers=bearer(tokens["access_token"]))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"


def test_userinfo_token_repeated_in_the_body_is_invalid_request(client, tokens):
    data = MultiDict([("access_token", tokens["access_token"]),
                      ("access_token", tokens["access_token"])])
    response = client.post("/userinfo", data=data)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_request"


def test_userinfo_without_a_token_asks_for_one_without_an_error_code(client, app):
    # RFC 6750 §3.1: a request with no authentication gets a bare challenge.
    for headers in ({}, {"Authorization": "Basic YTpi"}):
        response = client.get("/userinfo", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer a b"])
def test_userinfo_with_a_malformed_authorization_header_is_invalid_request(client, app, value):
    response = client.get("/userinfo", headers={"Authorization": value})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_request"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_request"'


def test_userinfo_with_a_huge_token_is_invalid_token(client, app):
    assert_invalid_token(userinfo(client, "x" * 10_000))


def test_userinfo_with_an_unknown_token_is_invalid_token(client, app):
    assert_invalid_token(userinfo(client, "not-a-token"))


def test_userinfo_email_claims_need_the_email_scope(client, oidc, rp, alice):
    app_client, secret = rp
    body = issue_tokens(oidc, app_client, secret, scope="openid profile")
    claims = userinfo(client, body["access_token"]).get_json()
    assert claims["sub"] == alice.sub
    assert claims["preferred_username"] == "alice"
    assert "email" not in claims
    assert "email_verified" not in claims


def test_userinfo_profile_claims_need_the_profile_scope(client, oidc, rp, alice):
    app_client, secret = rp
    body = issue_tokens(oidc, app_client, secret, scope="openid email")
    claims = userinfo(client, body["access_token"]).get_json()
    assert claims["email"] == "alice@example.com"
    assert "preferred_username" not in claims
    assert "name" not in claims


def test_userinfo_with_only_openid_gives_only_sub(client, oidc, rp, alice):
    app_client, secret = rp
    body = issue_tokens(oidc, app_client, secret, scope="openid")
    assert userinfo(client, body["access_token"]).get_json() == {"sub": alice.sub}


def test_userinfo_phone_claims_need_the_phone_scope(client, oidc, rp, app):
    make_user("bob", phone="+12025550143")
    app_client, secret = rp
    with_phone = oidc.sign_in(app_client, username="bob", scope="openid phone")["code"]
    body = oidc.token(app_client, secret, with_phone).get_json()
    claims = userinfo(client, body["access_token"]).get_json()
    assert claims["phone_number"] == "+12025550143"
    assert "phone_number_verified" in claims
    assert "email" not in claims

    without = oidc.sign_in(app_client, username="bob", scope="openid email",
                           prompt="login")["code"]
    body = oidc.token(app_client, secret, without).get_json()
    claims = userinfo(client, body["access_token"]).get_json()
    assert "phone_number" not in claims


def test_client_credentials_token_has_no_userinfo(client):
    service, secret = service_client()
    body = client.post("/token", data={"grant_type": "client_credentials", "scope": "openid"},
                       headers=basic_auth(service.client_id, secret)).get_json()
    response = userinfo(client, body["access_token"])
    assert response.status_code in (401, 403)
    assert response.headers["WWW-Authenticate"].startswith("Bearer error=")


def test_userinfo_needs_the_openid_scope(client):
    service, secret = service_client(scope="profile")
    body = client.post("/token", data={"grant_type": "client_credentials", "scope": "profile"},
                       headers=basic_auth(service.client_id, secret)).get_json()
    response = userinfo(client, body["access_token"])
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="openid"')


def test_userinfo_with_an_expired_token_is_invalid_token(client, tokens):
    db.session.execute(db.update(Token).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert_invalid_token(userinfo(client, tokens["access_token"]))


def test_userinfo_with_a_revoked_token_is_invalid_token(client, rp, tokens):
    app_client, secret = rp
    assert revoke(client, app_client, secret, tokens["access_token"]).status_code == 200
    assert_invalid_token(userinfo(client, tokens["access_token"]))


def test_userinfo_refuses_a_token_of_a_disabled_user(client, tokens, alice):
    alice.disabled = True
    db.session.commit()
    assert_invalid_token(userinfo(client, tokens["access_token"]))


# --- revocation ------------------------------------------------------------------------


def test_revoking_an_access_token_stops_it_but_not_the_grant(client, rp, tokens):
    app_client, secret = rp
    response = revoke(client, app_client, secret, tokens["access_token"],
                      token_type_hint="access_token")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert userinfo(client, tokens["access_token"]).status_code == 401
    assert not is_active(client, app_client, secret, tokens["access_token"])
    assert refresh(client, app_client, secret, tokens["refresh_token"]).status_code == 200


def test_revoking_a_refresh_token_revokes_its_family(client, rp, tokens):
    app_client, secret = rp
    newer = refresh(client, app_client, secret, tokens["refresh_token"]).get_json()
    response = revoke(client, app_client, secret, newer["refresh_token"],
                      token_type_hint="refresh_token")
    assert response.status_code == 200
    assert refresh(client, app_client, secret, newer["refresh_token"]).status_code == 400
    assert userinfo(client, newer["access_token"]).status_code == 401
    assert not is_active(client, app_client, secret, newer["refresh_token"])
    assert not is_active(client, app_client, secret, newer["access_token"])


def test_revocation_works_with_a_wrong_token_type_hint(client, rp, tokens):
    app_client, secret = rp
    response = revoke(client, app_client, secret, tokens["refresh_token"],
                      token_type_hint="access_token")
    assert response.status_code == 200
    assert refresh(client, app_client, secret, tokens["refresh_token"]).status_code == 400


def test_revoking_an_unknown_token_answers_200(client, rp):
    app_client, secret = rp
    response = revoke(client, app_client, secret, "never-issued")
    assert response.status_code == 200


def test_revoking_twice_answers_200(client, rp, tokens):
    app_client, secret = rp
    assert revoke(client, app_client, secret, tokens["refresh_token"]).status_code == 200
    assert revoke(client, app_client, secret, tokens["refresh_token"]).status_code == 200


def test_revoking_another_clients_token_has_no_effect(client, rp, other_rp, tokens):
    app_client, secret = rp
    other, other_secret = other_rp
    for token in (tokens["access_token"], tokens["refresh_token"]):
        response = revoke(client, other, other_secret, token)
        assert response.status_code == 400
        assert response.get_json()["error"] == "invalid_grant"
    assert userinfo(client, tokens["access_token"]).status_code == 200
    assert refresh(client, app_client, secret, tokens["refresh_token"]).status_code == 200


def test_revocation_needs_client_authentication(client, rp, tokens):
    app_client, secret = rp
    response = client.post("/revoke", data={"token": tokens["access_token"]})
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"
    response = revoke(client, app_client, secret + "x", tokens["access_token"])
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert userinfo(client, tokens["access_token"]).status_code == 200


def test_revocation_without_a_token_is_invalid_request(client, rp):
    app_client, secret = rp
    response = client.post("/revoke", data={}, headers=basic_auth(app_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_revocation_ignores_an_unknown_token_type_hint(client, rp, tokens):
    # RFC 7009 §4.1.2: an invalid hint does not influence the revocation.
    app_client, secret = rp
    response = revoke(client, app_client, secret, tokens["access_token"],
                      token_type_hint="id_token")
    assert response.status_code == 200
    assert userinfo(client, tokens["access_token"]).status_code == 401


def test_introspection_ignores_an_unknown_token_type_hint(client, rp, tokens):
    app_client, secret = rp
    response = introspect(client, app_client, secret, tokens["access_token"],
                          token_type_hint="id_token")
    assert response.get_json()["active"] is True


def test_revocation_with_a_repeated_token_is_invalid_request(client, rp, tokens):
    app_client, secret = rp
    response = client.post("/revoke", data=MultiDict([("token", tokens["access_token"]),
                                                      ("token", "other")]),
                           headers=basic_auth(app_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert userinfo(client, tokens["access_token"]).status_code == 200


def test_public_client_can_revoke_its_own_token(client, oidc, alice):
    public, _ = make_client(auth_method="none")
    code = oidc.sign_in(public, scope=OFFLINE_SCOPE)["code"]
    body = oidc.token(public, None, code, client_id=public.client_id).get_json()
    response = client.post("/revoke", data={"token": body["refresh_token"],
                                            "client_id": public.client_id})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert userinfo(client, body["access_token"]).status_code == 401


@pytest.mark.parametrize("token", ["", "x" * 100_000, "\u00e9\u0000"])
def test_revocation_with_odd_tokens_never_fails(client, rp, token):
    app_client, secret = rp
    response = revoke(client, app_client, secret, token)
    assert response.status_code in (200, 400)
    assert response.mimetype == "application/json"


# --- introspection ----------------------------------------------------------------------


def test_introspection_of_an_active_access_token(client, rp, tokens, alice):
    app_client, secret = rp
    response = introspect(client, app_client, secret, tokens["access_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["active"] is True
    assert body["sub"] == alice.sub
    assert body["client_id"] == app_client.client_id
    assert set(body["scope"].split()) == set(OFFLINE_SCOPE.split())
    assert body["token_type"] == "Bearer"
    assert abs(body["exp"] - (epoch(utcnow()) + tokens["expires_in"])) <= 5
    assert body["iat"] <= body["exp"]


def test_introspection_of_an_active_refresh_token(client, rp, tokens, alice):
    app_client, secret = rp
    body = introspect(client, app_client, secret, tokens["refresh_token"],
                      token_type_hint="refresh_token").get_json()
    assert body["active"] is True
    assert body["sub"] == alice.sub
    assert body["token_type"] == "refresh_token"
    assert body["exp"] > epoch(utcnow()) + tokens["expires_in"]


def test_introspection_of_a_revoked_token_is_inactive(client, rp, tokens):
    app_client, secret = rp
    revoke(client, app_client, secret, tokens["access_token"])
    assert introspect(client, app_client, secret,
                      tokens["access_token"]).get_json() == {"active": False}


def test_introspection_of_a_rotated_refresh_token_is_inactive(client, rp, tokens):
    app_client, secret = rp
    refresh(client, app_client, secret, tokens["refresh_token"])
    assert introspect(client, app_client, secret,
                      tokens["refresh_token"]).get_json() == {"active": False}


def test_introspection_of_an_expired_token_is_inactive(client, rp, tokens):
    app_client, secret = rp
    db.session.execute(db.update(Token).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert introspect(client, app_client, secret,
                      tokens["access_token"]).get_json() == {"active": False}


def test_introspection_of_an_unknown_token_is_inactive(client, rp):
    app_client, secret = rp
    assert introspect(client, app_client, secret, "never-issued").get_json() == {
        "active": False}


def test_introspection_of_another_clients_token_is_inactive(client, other_rp, tokens):
    other, other_secret = other_rp
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert introspect(client, other, other_secret, token).get_json() == {"active": False}


def test_introspection_of_a_token_of_a_disabled_user_is_inactive(client, rp, tokens, alice):
    app_client, secret = rp
    alice.disabled = True
    db.session.commit()
    assert introspect(client, app_client, secret,
                      tokens["access_token"]).get_json() == {"active": False}


def test_public_clients_can_not_introspect(client, oidc, alice):
    public, _ = make_client(auth_method="none")
    code = oidc.sign_in(public)["code"]
    body = oidc.token(public, None, code, client_id=public.client_id).get_json()
    response = client.post("/introspect", data={"token": body["access_token"],
                                                "client_id": public.client_id})
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"
    assert "active" not in response.get_json()


def test_introspection_needs_client_authentication(client, rp, tokens):
    app_client, secret = rp
    response = client.post("/introspect", data={"token": tokens["access_token"]})
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"
    response = introspect(client, app_client, secret + "x", tokens["access_token"])
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


def test_introspection_without_a_token_is_invalid_request(client, rp):
    app_client, secret = rp
    response = client.post("/introspect", data={},
                           headers=basic_auth(app_client.client_id, secret))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_services_refuse_get(client, app):
    for path in ("/revoke", "/introspect"):
        response = client.get(path)
        assert response.status_code == 405
        assert response.mimetype == "application/json"
