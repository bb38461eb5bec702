"""Discovery document, JWKS and the ID token signing keys (rotation, retirement, restart)."""

from datetime import timedelta

import pytest
from flask import request, request_started
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet, RSAKey

from idp import create_app
from idp.extensions import db
from idp.models import SigningKey
from idp.oauth import keys
from idp.timeutil import epoch, utcnow
from tests.conftest import ISSUER, PASSWORD, base_config, make_client

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


# --- helpers -----------------------------------------------------------------------------


def discovery(client) -> dict:
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def published(client) -> dict:
    response = client.get("/jwks.json")
    assert response.status_code == 200
    return response.get_json()


def published_kids(client) -> list[str]:
    return [k["kid"] for k in published(client)["keys"]]


def id_token_for(oidc, rp) -> str:
    """Sign in (or reuse the SSO session) and exchange the code for an ID token."""
    app_client, secret = rp
    response = oidc.follow(oidc.authorize(app_client))
    if response.status_code == 200 and "Log In" in response.get_data(as_text=True):
        response = oidc.follow(oidc.submit(response, {"username": "alice",
                                                      "password": PASSWORD}, button="submit"))
    params = oidc.callback_params(response)
    response = oidc.token(app_client, secret, params["code"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()["id_token"]


def header_kid(token: str) -> str:
    return jws.extract_compact(token.encode()).protected["kid"]


def verify_with_jwks(client, token: str) -> dict:
    """Verify ``token`` with the published key whose kid its header names (and only that)."""
    kid = header_kid(token)
    matching = [k for k in published(client)["keys"] if k["kid"] == kid]
    assert len(matching) == 1, f"kid {kid} is not published"
    return jwt.decode(token, RSAKey.import_key(matching[0]), algorithms=["RS256"]).claims


def rotate(runner) -> str:
    result = runner.invoke(args=["keys", "rotate"])
    assert result.exit_code == 0, result.output
    return result.output


# --- discovery ---------------------------------------------------------------------------


def test_discovery_has_every_field_a_certified_client_needs(client):
    doc = discovery(client)
    required = {
        "issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
        "response_types_supported", "subject_types_supported",
        "id_token_signing_alg_values_supported", "scopes_supported", "claims_supported",
        "grant_types_supported", "token_endpoint_auth_methods_supported",
        "revocation_endpoint", "introspection_endpoint", "end_session_endpoint",
        "code_challenge_methods_supported", "response_modes_supported",
    }
    assert required <= set(doc), required - set(doc)
    assert doc["response_types_supported"] == ["code"]
    assert "public" in doc["subject_types_supported"]
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    assert "none" not in doc["id_token_signing_alg_values_supported"]
    assert set(doc["scopes_supported"]) >= {"openid", "profile", "email", "phone",
                                           "offline_access"}
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token",
                                                "client_credentials"}
    assert {"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr",
            "sid"} <= set(doc["claims_supported"])


def test_discovery_endpoints_are_under_the_issuer_and_answer(client):
    doc = discovery(client)
    assert doc["issuer"] == ISSUER
    endpoints = {name: url for name, url in doc.items() if name.endswith(("_endpoint", "_uri"))}
    for name, url in endpoints.items():
        assert url.startswith(ISSUER + "/"), (name, url)
    # The published URLs are the routes the application serves.
    assert client.get(doc["jwks_uri"].removeprefix(ISSUER)).status_code == 200
    for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
        path = doc[name].removeprefix(ISSUER)
        assert client.post(path).status_code in (400, 401), name
    assert client.get(doc["userinfo_endpoint"].removeprefix(ISSUER)).status_code == 401


@pytest.mark.parametrize("app_config", [{"IDP_ISSUER": "https://login.example.org"}])
def test_discovery_issuer_and_endpoints_come_from_idp_issuer(client):
    doc = discovery(client)
    assert doc["issuer"] == "https://login.example.org"
    assert doc["authorization_endpoint"] == "https://login.example.org/authorize"
    assert doc["token_endpoint"] == "https://login.example.org/token"
    assert doc["jwks_uri"] == "https://login.example.org/jwks.json"
    assert doc["end_session_endpoint"] == "https://login.example.org/logout"


def test_discovery_offers_pkce_s256_only(client):
    assert discovery(client)["code_challenge_methods_supported"] == ["S256"]


def test_discovery_lists_query_and_form_post_response_modes(client):
    assert set(discovery(client)["response_modes_supported"]) == {"query", "form_post"}


def test_discovery_lists_the_password_acr(client):
    assert "urn:idp:acr:pwd" in discovery(client)["acr_values_supported"]


def test_discovery_lists_the_four_client_auth_methods(client):
    doc = discovery(client)
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none",
    }
    assert "RS256" in doc["token_endpoint_auth_signing_alg_values_supported"]
    assert "none" not in doc["token_endpoint_auth_signing_alg_values_supported"]


def test_every_advertised_client_assertion_alg_is_accepted(client, app):
    import secrets
    import time

    from joserfc.jwk import ECKey

    for alg in discovery(client)["token_endpoint_auth_signing_alg_values_supported"]:
        key = (ECKey.generate_key("P-256", auto_kid=True) if alg.startswith("ES")
               else RSAKey.generate_key(2048, auto_kid=True))
        client_id = "pkjwt-" + alg.lower()
        make_client(client_id=client_id, auth_method="private_key_jwt",
                    jwks={"keys": [key.as_dict(private=False)]},
                    grant_types=["client_credentials"], scope="profile")
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": ISSUER + "/token",
                  "iat": now, "exp": now + 60, "jti": secrets.token_hex(8)}
        assertion = jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])
        response = client.post("/token", data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        })
        assert response.status_code == 200, (alg, response.get_json())


def test_discovery_announces_iss_in_authorization_response(client):
    assert discovery(client)["authorization_response_iss_parameter_supported"] is True


def test_discovery_announces_backchannel_logout_with_sid(client):
    doc = discovery(client)
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True
    assert doc["end_session_endpoint"] == ISSUER + "/logout"


def test_discovery_says_request_objects_are_not_supported(client):
    doc = discovery(client)
    assert doc["request_parameter_supported"] is False
    assert doc["request_uri_parameter_supported"] is False


def test_discovery_announces_claims_parameter_and_prompt_values(client):
    doc = discovery(client)
    assert doc["claims_parameter_supported"] is True
    assert {"none", "login", "consent"} <= set(doc["prompt_values_supported"])


def test_discovery_and_jwks_may_be_read_cross_origin(client):
    for path in ("/.well-known/openid-configuration", "/jwks.json"):
        response = client.get(path)
        assert response.headers["Access-Control-Allow-Origin"] == "*"


# --- JWKS --------------------------------------------------------------------------------


def test_jwks_publishes_public_rsa_signing_keys_only(client, runner):
    keys.active_key()
    rotate(runner)  # an active and a retired key are both published
    doc = published(client)
    assert len(doc["keys"]) == 2
    for key in doc["keys"]:
        assert not PRIVATE_MEMBERS & set(key), key
        assert key["kty"] == "RSA"
        assert key["use"] == "sig"
        assert key["alg"] == "RS256"
        assert key["kid"]
        assert {"n", "e"} <= set(key)
    assert len(set(published_kids(client))) == 2


def test_jwks_of_a_fresh_database_already_has_a_signing_key(client):
    assert db.session.scalar(db.select(SigningKey.id)) is None
    kids = published_kids(client)
    assert len(kids) == 1
    assert kids == [keys.active_key().kid]


def test_jwks_keys_import_as_public_keys(client):
    keyset = KeySet.import_key_set(published(client))
    assert keyset.keys
    for key in keyset.keys:
        assert not key.is_private


def test_id_token_verifies_with_the_published_key_and_names_its_kid(client, oidc, rp, alice):
    token = id_token_for(oidc, rp)
    kid = header_kid(token)
    assert kid == keys.active_key().kid
    assert kid in published_kids(client)
    claims = verify_with_jwks(client, token)
    assert claims["iss"] == ISSUER
    assert claims["aud"] == rp[0].client_id


def test_id_token_does_not_verify_with_another_key(client, oidc, rp, alice):
    token = id_token_for(oidc, rp)
    stranger = RSAKey.generate_key(2048, parameters={"kid": header_kid(token)})
    with pytest.raises(BadSignatureError):
        jwt.decode(token, stranger, algorithms=["RS256"])


# --- rotation ----------------------------------------------------------------------------


def test_key_rotation_signs_new_tokens_with_a_new_kid(client, runner, oidc, rp, alice):
    old_kid = header_kid(id_token_for(oidc, rp))
    output = rotate(runner)
    new_token = id_token_for(oidc, rp)
    new_kid = header_kid(new_token)
    assert new_kid != old_kid
    assert new_kid in output
    assert verify_with_jwks(client, new_token)["sub"] == alice.sub


def test_rotated_key_stays_published_until_its_tokens_expire(client, runner, oidc, rp, alice):
    old_token = id_token_for(oidc, rp)
    old_kid = header_kid(old_token)
    rotate(runner)
    new_kid = header_kid(id_token_for(oidc, rp))
    assert {old_kid, new_kid} <= set(published_kids(client))
    # A token signed before the rotation still verifies against the published keys.
    assert verify_with_jwks(client, old_token)["sub"] == alice.sub
    retired = db.session.scalar(db.select(SigningKey).filter_by(kid=old_kid))
    assert not retired.active
    old_exp = jwt.decode(old_token, RSAKey.import_key(retired.public_jwk)).claims["exp"]
    assert epoch(retired.publish_until) >= old_exp


def test_retired_key_leaves_the_jwks_after_publish_until(client, runner, oidc, rp, alice):
    old_token = id_token_for(oidc, rp)
    old_kid = header_kid(old_token)
    rotate(runner)
    retired = db.session.scalar(db.select(SigningKey).filter_by(kid=old_kid))
    retired.publish_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    kids = published_kids(client)
    assert old_kid not in kids
    assert kids == [keys.active_key().kid]
    with pytest.raises(Exception):  # noqa: B017 - the kid is gone from the key set
        jwt.decode(old_token, KeySet.import_key_set(published(client)))


def test_rotating_twice_keeps_every_unexpired_key_published(client, runner):
    first = keys.active_key().kid
    rotate(runner)
    second = keys.active_key().kid
    rotate(runner)
    third = keys.active_key().kid
    assert len({first, second, third}) == 3
    assert set(published_kids(client)) == {first, second, third}
    active = db.session.scalars(db.select(SigningKey).filter_by(active=True)).all()
    assert [k.kid for k in active] == [third]


def test_keys_persist_across_a_restart(tmp_path, app, client, oidc, rp, alice):
    token = id_token_for(oidc, rp)
    kid = header_kid(token)
    sub = alice.sub
    db.session.remove()
    restarted = create_app(base_config(tmp_path))
    with restarted.app_context():
        assert keys.active_key().kid == kid
        http = restarted.test_client()
        published_after = http.get("/jwks.json").get_json()
        assert [k["kid"] for k in published_after["keys"]] == [kid]
        claims = jwt.decode(token, KeySet.import_key_set(published_after)).claims
        assert claims["sub"] == sub
        db.session.remove()


def test_signing_keys_are_encrypted_at_rest(client, app):
    from idp.models import SigningKey
    from idp.oauth import keys

    row = keys.active_key()
    private = keys.private_key(row).as_dict(private=True)
    stored = db.session.scalar(db.select(SigningKey.private_jwk_encrypted).filter_by(kid=row.kid))
    assert private["d"] not in stored and private["p"] not in stored
    assert row.kid in client.get("/jwks.json").get_data(as_text=True)


# --- answered in front of Flask once rendered ------------------------------------------------


def answer_of(response) -> tuple[int, bytes, dict]:
    """What a client sees of an answer, but the request id (new for each request)."""
    seen = {k: v for k, v in response.headers.items() if k != "X-Request-ID"}
    return response.status_code, response.get_data(), seen


@pytest.fixture
def flask_requests(app) -> list[str]:
    """The paths of the requests that went through Flask (not answered in front of it)."""
    seen: list[str] = []

    def started(_sender, **_extra):
        seen.append(request.path)

    request_started.connect(started, app)
    yield seen
    request_started.disconnect(started, app)


RENDERED = {"/.well-known/openid-configuration": "idp.discovery",
            "/jwks.json": "idp.published_keys"}


@pytest.mark.parametrize("path", list(RENDERED))
def test_a_rendered_document_is_answered_again_without_flask_exactly_as_flask_answered_it(
        client, app, path, flask_requests):
    first = client.get(path)  # rendered by Flask
    again = client.get(path)
    assert flask_requests == [path]  # the second never reached Flask
    assert answer_of(again) == answer_of(first)
    assert again.headers["X-Request-ID"] != first.headers["X-Request-ID"]

    etag = {"If-None-Match": first.headers["ETag"]}
    kept = app.extensions.pop(RENDERED[path])
    by_flask = client.get(path, headers=etag)  # nothing rendered: Flask answers 304 itself
    app.extensions[RENDERED[path]] = kept
    in_front = client.get(path, headers=etag)
    assert flask_requests == [path, path]
    assert by_flask.status_code == in_front.status_code == 304
    assert answer_of(in_front) == answer_of(by_flask)
    assert in_front.get_data() == b""
    given = client.get(path, headers={"X-Request-ID": "lb-1234"})
    assert given.headers["X-Request-ID"] == "lb-1234"


def test_a_key_rotated_by_another_instance_is_published_once_the_cached_jwks_expires(
        client, app, tmp_path):
    before = set(published_kids(client))
    other = create_app(base_config(tmp_path))  # another instance on the same database
    with other.app_context():
        new_kid = keys.rotate().kid
    assert set(published_kids(client)) == before  # still this worker's fresh copy
    app.extensions["idp.published_keys"] = keys.Published(
        **{**vars(app.extensions["idp.published_keys"]), "until": 0.0})  # its time is over
    assert new_kid in published_kids(client)
