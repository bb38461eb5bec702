"""The authorization endpoint: which requests it accepts, which it refuses and how it answers.

Errors before the redirect URI is known to be registered are shown on a page and never
redirected; every other answer goes to the redirect URI with ``iss`` and the exact ``state``,
as a redirect (``query``) or as an auto-submitting form (``form_post``).
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from sqlalchemy import update

from idp.extensions import db
from idp.models import PendingAuthorization, SsoSession
from idp.oauth import keys
from idp.timeutil import epoch, utcnow
from tests.conftest import ISSUER, OidcActions, forms, make_client, make_user, pkce_pair

REDIRECT_URI = "https://rp.example/cb"
ODD_STATES = [
    "two words",
    "a&b=c;d",
    "café ✓ 東京",
    "100%+plus/slash?hash#",
    '"quoted" <b>tag</b>',
]


@pytest.fixture
def app_config():
    # The core's own sign-in: password, consent, terms (no plugin steps).
    return {"IDP_PLUGINS": ""}


# --- helpers --------------------------------------------------------------------------


def callback(response) -> dict:
    """The parameters sent to the client by a ``query`` mode redirect."""
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI), location
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in query.values()), query
    return {k: v[0] for k, v in query.items()}


def form_post(response) -> tuple[str, dict]:
    """The form action and hidden fields of a ``form_post`` answer."""
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    assert "no-store" in response.headers.get("Cache-Control", "")
    page = forms(response.get_data(as_text=True))
    assert len(page) == 1
    assert page[0]["method"].lower() == "post"
    return page[0]["action"], page[0]["fields"]


def assert_error_page(response, redirect_uri: str | None = None):
    """An error shown to the person: no redirect, no link back to the client."""
    assert response.status_code == 400, response.status_code
    assert "Location" not in response.headers
    html = response.get_data(as_text=True)
    assert 'role="alert"' in html
    assert "code=" not in html
    if redirect_uri:
        assert f'href="{redirect_uri}' not in html
        assert f'action="{redirect_uri}' not in html
        assert "http-equiv" not in html.lower()


def base_query(rp, **params) -> dict:
    _, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": rp.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid",
        "state": "st-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    query.update(params)
    return {k: v for k, v in query.items() if v is not None}


def id_token_claims(http, oidc, rp, secret, code, **extra) -> dict:
    response = oidc.token(rp, secret, code, **extra)
    assert response.status_code == 200, response.get_json()
    keyset = KeySet.import_key_set(http.get("/jwks.json").get_json())
    return jwt.decode(response.get_json()["id_token"], keyset).claims


def backdate_sessions(seconds: int) -> None:
    """Make every SSO session's last password check ``seconds`` old."""
    db.session.execute(update(SsoSession).values(auth_time=utcnow() - timedelta(seconds=seconds)))
    db.session.commit()


def page_path(response) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return urlsplit(response.headers["Location"]).path


# --- client and redirect URI ------------------------------------------------------------


def test_unknown_client_id_shows_error_page_and_never_redirects(client, rp):
    response = client.get("/authorize?" + urlencode(base_query(rp[0], client_id="no-such-app")))
    assert_error_page(response, REDIRECT_URI)
    assert "not registered" in response.get_data(as_text=True)


def test_missing_client_id_shows_error_page_and_never_redirects(client, rp):
    response = client.get("/authorize?" + urlencode(base_query(rp[0], client_id=None)))
    assert_error_page(response, REDIRECT_URI)


def test_missing_redirect_uri_shows_error_page_and_never_redirects(client, rp):
    response = client.get("/authorize?" + urlencode(base_query(rp[0], redirect_uri=None)))
    assert_error_page(response, REDIRECT_URI)


@pytest.mark.parametrize("redirect_uri", [
    "https://attacker.example/cb",
    "https://rp.example/cb/",
    "https://RP.example/cb",
    "HTTPS://rp.example/cb",
    "https://rp.example/CB",
    "https://rp.example/cb?extra=1",
    "https://rp.example/cb#fragment",
    "https://rp.example/cbx",
    "https://rp.example/cb%20",
    "https://rp.example:443/cb",
    "http://rp.example/cb",
    "https://rp.example/cb/../cb",
    "https://rp.example.attacker.example/cb",
])
def test_unregistered_redirect_uri_shows_error_page_and_never_redirects(client, rp,
                                                                          redirect_uri):
    response = client.get("/authorize?" + urlencode(
        base_query(rp[0], redirect_uri=redirect_uri, prompt="none")))
    assert_error_page(response, redirect_uri)


def test_redirect_uri_of_another_client_shows_error_page(client, rp):
    make_client(client_id="other-app", redirect_uris=["https://other.example/cb"])
    response = client.get("/authorize?" + urlencode(
        base_query(rp[0], redirect_uri="https://other.example/cb")))
    assert_error_page(response, "https://other.example/cb")


def test_registered_redirect_uri_with_a_query_keeps_it_and_adds_the_answer(client, app):
    registered = REDIRECT_URI + "?tenant=blue"
    app_client, _ = make_client(redirect_uris=[registered])
    response = client.get("/authorize?" + urlencode(
        base_query(app_client, redirect_uri=registered, request="x")))
    location = response.headers["Location"]
    assert location.startswith(registered + "&")
    query = parse_qs(urlsplit(location).query)
    assert query["tenant"] == ["blue"]
    assert query["error"] == ["request_not_supported"]
    # Another value of the registered query is another URI.
    response = client.get("/authorize?" + urlencode(
        base_query(app_client, redirect_uri=REDIRECT_URI + "?tenant=red")))
    assert_error_page(response, REDIRECT_URI)


# --- duplicated, unknown and unsupported parameters -------------------------------------


@pytest.mark.parametrize("name", ["response_type", "scope", "state", "nonce", "prompt",
                                  "code_challenge", "code_challenge_method", "max_age"])
def test_repeated_parameter_is_refused_with_invalid_request(client, rp, name):
    query = base_query(rp[0], nonce="n-1", prompt="login", max_age="60")
    pairs = list(query.items()) + [(name, query[name])]
    params = callback(client.get("/authorize?" + urlencode(pairs)))
    assert params["error"] == "invalid_request"
    assert params["iss"] == ISSUER
    assert params["state"] == "st-1"


def test_repeated_parameter_with_different_values_is_refused(client, rp):
    pairs = list(base_query(rp[0]).items()) + [("scope", "openid offline_access")]
    params = callback(client.get("/authorize?" + urlencode(pairs)))
    assert params["error"] == "invalid_request"


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_repeated_client_id_or_redirect_uri_shows_error_page(client, rp, name):
    query = base_query(rp[0])
    pairs = list(query.items()) + [(name, query[name])]
    assert_error_page(client.get("/authorize?" + urlencode(pairs)), REDIRECT_URI)


def test_request_object_is_refused_with_request_not_supported(client, rp):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], request="eyJhbGciOiJub25lIn0.e30."))))
    assert params["error"] == "request_not_supported"
    assert params["state"] == "st-1"
    assert params["iss"] == ISSUER


def test_request_uri_is_refused_with_request_uri_not_supported(client, rp):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], request_uri="https://rp.example/request.jwt"))))
    assert params["error"] == "request_uri_not_supported"
    assert params["state"] == "st-1"
    assert params["iss"] == ISSUER


def test_unknown_parameters_are_ignored(oidc, rp, alice):
    params = oidc.sign_in(rp[0], foo="bar", x_custom_thing="1", resource="urn:x")
    assert params["code"]
    assert "foo" not in params


def test_parameters_without_a_value_are_treated_as_omitted(client, oidc, rp, alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client, nonce="", max_age="", prompt="", login_hint="")
    assert params["code"]
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert "nonce" not in claims


@pytest.mark.parametrize("response_type", ["token", "id_token", "code id_token",
                                           "code token", "id_token token", "none", "CODE"])
def test_unsupported_response_type_is_refused(client, rp, response_type):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], response_type=response_type))))
    assert params["error"] == "unsupported_response_type"
    assert params["state"] == "st-1"
    assert params["iss"] == ISSUER


def test_missing_response_type_is_refused(client, rp):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], response_type=None))))
    assert params["error"] in {"invalid_request", "unsupported_response_type"}
    assert params["iss"] == ISSUER


def test_client_not_registered_for_the_code_grant_is_refused(client, app):
    service, _ = make_client(grant_types=["client_credentials"])
    params = callback(client.get("/authorize?" + urlencode(base_query(service))))
    assert params["error"] == "unauthorized_client"
    assert params["iss"] == ISSUER


@pytest.mark.parametrize("scope", ["openid bogus", "openid admin:all", "openid OPENID"])
def test_unknown_scope_is_refused_with_invalid_scope(client, rp, scope):
    params = callback(client.get("/authorize?" + urlencode(base_query(rp[0], scope=scope))))
    assert params["error"] == "invalid_scope"
    assert params["state"] == "st-1"
    assert params["iss"] == ISSUER


def test_scope_the_client_is_not_registered_for_is_left_out_of_the_tokens(client, oidc,
                                                                           alice):
    app_client, secret = make_client(scope="openid profile")
    params = oidc.sign_in(app_client, scope="openid profile email")
    response = oidc.token(app_client, secret, params["code"])
    body = response.get_json()
    assert response.status_code == 200, body
    assert "email" not in body["scope"].split()
    keyset = KeySet.import_key_set(client.get("/jwks.json").get_json())
    assert "email" not in jwt.decode(body["id_token"], keyset).claims


@pytest.mark.parametrize("mode", ["fragment", "web_message", "query.jwt"])
def test_unsupported_response_mode_is_refused_in_query_mode(client, rp, mode):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], response_mode=mode))))
    assert params["error"] == "invalid_request"
    assert params["iss"] == ISSUER


# --- iss and state on every answer ------------------------------------------------------


@pytest.mark.parametrize("state", ODD_STATES)
def test_success_in_query_mode_carries_iss_and_echoes_state_exactly(oidc, rp, alice, state):
    params = oidc.sign_in(rp[0], state=state)
    assert params["state"] == state
    assert params["iss"] == ISSUER
    assert params["code"]


@pytest.mark.parametrize("state", ODD_STATES)
def test_success_in_form_post_mode_posts_code_state_and_iss_to_the_redirect_uri(oidc, rp,
                                                                                alice, state):
    response = oidc.follow(oidc.login(oidc.authorize(rp[0], state=state,
                                                     response_mode="form_post")))
    action, fields = form_post(response)
    assert action == REDIRECT_URI
    assert set(fields) == {"code", "state", "iss"}
    assert fields["state"] == state
    assert fields["iss"] == ISSUER
    assert fields["code"]


def test_in_form_post_mode_the_last_form_redirects_to_a_page_that_reloads_without_a_post(
        client, oidc, rp, alice):
    after_password = oidc.login(oidc.authorize(rp[0], response_mode="form_post"))
    assert after_password.status_code == 302
    assert "/authorize/resume/" in after_password.headers["Location"]
    page = client.get(after_password.headers["Location"])
    action, fields = form_post(page)
    assert action == REDIRECT_URI and fields["code"]
    # Reloading it does not answer the client again.
    again = client.get(after_password.headers["Location"])
    assert again.status_code == 400
    assert "already finished" in again.get_data(as_text=True)


def test_form_post_code_is_redeemable(client, oidc, rp, alice):
    app_client, secret = rp
    response = oidc.follow(oidc.login(oidc.authorize(app_client, response_mode="form_post")))
    _, fields = form_post(response)
    claims = id_token_claims(client, oidc, app_client, secret, fields["code"])
    assert claims["sub"] == alice.sub


# Requests that are refused, with the error each one gets.
ERROR_CASES = [
    ({"request": "x"}, "request_not_supported"),
    ({"request_uri": "https://rp.example/r"}, "request_uri_not_supported"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "openid bogus"}, "invalid_scope"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"max_age": "soon"}, "invalid_request"),
    ({"claims": "{not json"}, "invalid_request"),
    ({"prompt": "sometimes"}, "invalid_request"),
    ({"id_token_hint": "not-a-token"}, "invalid_request"),
    ({"prompt": "none"}, "login_required"),
    ({"claims": json.dumps({"id_token": {"acr": {"essential": True,
                                                 "values": ["urn:example:unknown"]}}})},
     "unmet_authentication_requirements"),
]


@pytest.mark.parametrize(("extra", "error"), ERROR_CASES)
@pytest.mark.parametrize("state", ["plain-state", "a b&c=d ✓"])
def test_error_in_query_mode_carries_iss_and_echoes_state_exactly(client, rp, extra, error,
                                                                  state):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], state=state, **extra))))
    assert params["error"] == error
    assert params["state"] == state
    assert params["iss"] == ISSUER


@pytest.mark.parametrize(("extra", "error"), ERROR_CASES)
@pytest.mark.parametrize("state", ["plain-state", '"><script>x</script> ✓'])
def test_error_in_form_post_mode_posts_error_state_and_iss(client, rp, extra, error, state):
    response = client.get("/authorize?" + urlencode(
        base_query(rp[0], state=state, response_mode="form_post", **extra)))
    action, fields = form_post(response)
    assert action == REDIRECT_URI
    assert fields["error"] == error
    assert fields["state"] == state
    assert fields["iss"] == ISSUER
    assert "<script>x" not in response.get_data(as_text=True)


def test_answer_without_state_in_the_request_has_no_state(client, rp):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], state=None, request="x"))))
    assert "state" not in params
    assert params["iss"] == ISSUER


def test_access_denied_carries_iss_and_state(oidc, rp, alice):
    response = oidc.login(oidc.authorize(rp[0], prompt="consent", state="deny me"))
    consent = oidc.follow(response, answer_pages=False)
    params = callback(oidc.submit(consent, button="deny"))
    assert params["error"] == "access_denied"
    assert params["state"] == "deny me"
    assert params["iss"] == ISSUER
    assert set(params) <= {"error", "error_description", "state", "iss"}


# --- PKCE -------------------------------------------------------------------------------


def test_pkce_plain_method_is_refused(client, rp):
    verifier = secrets.token_urlsafe(48)
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], code_challenge=verifier, code_challenge_method="plain"))))
    assert params["error"] == "invalid_request"


def test_code_challenge_without_method_is_refused(client, rp):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], code_challenge_method=None))))
    assert params["error"] == "invalid_request"


def test_code_challenge_method_without_challenge_is_refused(client, rp):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], code_challenge=None))))
    assert params["error"] == "invalid_request"


def test_malformed_code_challenge_is_refused(client, rp):
    params = callback(client.get("/authorize?" + urlencode(
        base_query(rp[0], code_challenge="too-short"))))
    assert params["error"] == "invalid_request"


def test_public_client_without_pkce_is_refused(client, app):
    public, _ = make_client(auth_method="none")
    params = callback(client.get("/authorize?" + urlencode(
        base_query(public, code_challenge=None, code_challenge_method=None))))
    assert params["error"] == "invalid_request"
    assert params["iss"] == ISSUER


def test_public_client_with_pkce_signs_in_and_redeems_the_code(client, oidc, alice):
    public, _ = make_client(auth_method="none")
    params = oidc.sign_in(public)
    claims = id_token_claims(client, oidc, public, None, params["code"],
                             client_id=public.client_id)
    assert claims["sub"] == alice.sub


def test_confidential_client_requiring_pkce_without_it_is_refused(client, app):
    strict, _ = make_client(require_pkce=True)
    params = callback(client.get("/authorize?" + urlencode(
        base_query(strict, code_challenge=None, code_challenge_method=None))))
    assert params["error"] == "invalid_request"


def test_confidential_client_without_the_flag_may_omit_pkce(client, oidc, rp, alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client, pkce=False)
    oidc.verifier = None
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["sub"] == alice.sub


# --- nonce ------------------------------------------------------------------------------


def test_nonce_is_returned_in_the_id_token(client, oidc, rp, alice):
    app_client, secret = rp
    nonce = "n-" + secrets.token_urlsafe(16)
    params = oidc.sign_in(app_client, nonce=nonce)
    assert id_token_claims(client, oidc, app_client, secret, params["code"])["nonce"] == nonce


def test_code_flow_without_nonce_issues_an_id_token_without_nonce(client, oidc, rp, alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client, nonce=None)
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert "nonce" not in claims
    assert claims["sub"] == alice.sub


# --- prompt -----------------------------------------------------------------------------


def test_prompt_none_without_session_answers_login_required(oidc, rp, alice):
    params = callback(oidc.authorize(rp[0], prompt="none"))
    assert params["error"] == "login_required"
    assert params["state"] == oidc.last_params["state"]


def test_prompt_none_with_session_returns_a_code_without_any_page(client, oidc, rp, alice):
    app_client, secret = rp
    oidc.sign_in(app_client)
    params = callback(oidc.authorize(app_client, prompt="none"))
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["sub"] == alice.sub


def test_prompt_none_when_consent_is_needed_answers_consent_required(oidc, rp, alice):
    oidc.sign_in(rp[0])
    params = callback(oidc.authorize(rp[0], prompt="none", scope="openid offline_access"))
    assert params["error"] == "consent_required"


def test_prompt_none_when_terms_are_needed_answers_interaction_required(oidc, rp, alice):
    oidc.sign_in(rp[0])
    with_terms, _ = make_client(terms_text="Be nice.")
    params = callback(oidc.authorize(with_terms, prompt="none"))
    assert params["error"] == "interaction_required"


@pytest.mark.parametrize("prompt", ["none login", "none consent", "sometimes"])
def test_invalid_prompt_is_refused(client, rp, prompt):
    params = callback(client.get("/authorize?" + urlencode(base_query(rp[0], prompt=prompt))))
    assert params["error"] == "invalid_request"


def test_prompt_login_with_session_asks_the_password_again_and_moves_auth_time(client, oidc,
                                                                               rp, alice):
    app_client, secret = rp
    oidc.sign_in(app_client)
    backdate_sessions(600)
    before = epoch(utcnow()) - 600
    response = oidc.authorize(app_client, prompt="login")
    assert page_path(response).startswith("/signin/")
    params = callback(oidc.follow(oidc.login(response)))
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["auth_time"] > before + 300


def test_sso_sign_in_reports_the_time_of_the_password_check(client, oidc, rp, alice):
    app_client, secret = rp
    oidc.sign_in(app_client)
    backdate_sessions(600)
    params = callback(oidc.authorize(app_client))
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert abs(claims["auth_time"] - (epoch(utcnow()) - 600)) <= 5


def test_prompt_consent_shows_the_consent_page_and_allow_returns_a_code(oidc, rp, alice):
    response = oidc.follow(oidc.login(oidc.authorize(rp[0], prompt="consent")),
                           answer_pages=False)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert ">Allow<" in html or 'value="Allow"' in html
    assert ">Deny<" in html or 'value="Deny"' in html
    params = callback(oidc.follow(oidc.submit(response, button="allow")))
    assert params["code"]


def test_prompt_consent_deny_answers_access_denied(oidc, rp, alice):
    response = oidc.follow(oidc.login(oidc.authorize(rp[0], prompt="consent")),
                           answer_pages=False)
    params = callback(oidc.submit(response, button="deny"))
    assert params["error"] == "access_denied"
    assert params["iss"] == ISSUER


def test_offline_access_asks_consent_once_per_client(client, oidc, rp, alice):
    app_client, secret = rp
    response = oidc.follow(oidc.login(oidc.authorize(app_client,
                                                     scope="openid offline_access")),
                           answer_pages=False)
    assert "Allow" in response.get_data(as_text=True)
    params = callback(oidc.follow(oidc.submit(response, button="allow")))
    tokens = oidc.token(app_client, secret, params["code"]).get_json()
    assert tokens.get("refresh_token")
    # The same client again: no consent page.
    params = callback(oidc.authorize(app_client, scope="openid offline_access"))
    assert params["code"]
    # Another client: asked again.
    other, _ = make_client()
    response = oidc.follow(oidc.authorize(other, scope="openid offline_access"),
                           answer_pages=False)
    assert response.status_code == 200
    assert "<h1>Allow access</h1>" in response.get_data(as_text=True)


def test_offline_access_denied_answers_access_denied_and_asks_again_next_time(oidc, rp,
                                                                              alice):
    response = oidc.follow(oidc.login(oidc.authorize(rp[0], scope="openid offline_access")),
                           answer_pages=False)
    assert callback(oidc.submit(response, button="deny"))["error"] == "access_denied"
    response = oidc.follow(oidc.authorize(rp[0], scope="openid offline_access"),
                           answer_pages=False)
    assert "<h1>Allow access</h1>" in response.get_data(as_text=True)


# --- max_age ----------------------------------------------------------------------------


def test_max_age_zero_asks_the_password_again(oidc, rp, alice):
    oidc.sign_in(rp[0])
    response = oidc.authorize(rp[0], max_age="0")
    assert page_path(response).startswith("/signin/")
    assert callback(oidc.follow(oidc.login(response)))["code"]


def test_max_age_shorter_than_the_session_asks_the_password_again(oidc, rp, alice):
    oidc.sign_in(rp[0])
    backdate_sessions(600)
    response = oidc.authorize(rp[0], max_age="60")
    assert page_path(response).startswith("/signin/")


def test_large_max_age_keeps_the_session_without_a_page(client, oidc, rp, alice):
    app_client, secret = rp
    oidc.sign_in(app_client)
    backdate_sessions(600)
    params = callback(oidc.authorize(app_client, max_age="86400"))
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["auth_time"] <= epoch(utcnow()) - 590


def test_max_age_with_prompt_none_and_an_old_session_answers_login_required(oidc, rp, alice):
    oidc.sign_in(rp[0])
    backdate_sessions(600)
    assert callback(oidc.authorize(rp[0], max_age="60", prompt="none"))["error"] == (
        "login_required")


@pytest.mark.parametrize("max_age", ["-1", "abc", "1.5", "1e3", " 5", "0x10", "²", "٣",
                                     "99999999999"])
def test_invalid_max_age_is_refused_with_invalid_request(client, rp, max_age):
    params = callback(client.get("/authorize?" + urlencode(base_query(rp[0], max_age=max_age))))
    assert params["error"] == "invalid_request"
    assert params["iss"] == ISSUER


# --- login_hint, id_token_hint, ui_locales, display -------------------------------------


def test_login_hint_prefills_user_name(client, oidc, rp, alice):
    response = oidc.authorize(rp[0], login_hint="alice")
    page = client.get(response.headers["Location"])
    assert forms(page.get_data(as_text=True))[0]["fields"]["username"] == "alice"


def test_login_hint_with_markup_is_shown_as_text(client, oidc, rp):
    response = oidc.authorize(rp[0], login_hint='"><script>x()</script>')
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "<script>x()" not in html
    assert forms(html)[0]["fields"]["username"] == '"><script>x()</script>'


def sign_in_elsewhere(app, rp, username) -> str:
    """Sign ``username`` in from another browser; returns their ID token."""
    make_user(username)
    other = OidcActions(app.test_client())
    app_client, secret = rp
    params = other.sign_in(app_client, username=username)
    return other.token(app_client, secret, params["code"]).get_json()["id_token"]


def test_id_token_hint_of_the_signed_in_user_with_prompt_none_returns_a_code(oidc, rp, alice):
    app_client, secret = rp
    first = oidc.sign_in(app_client)
    hint = oidc.token(app_client, secret, first["code"]).get_json()["id_token"]
    params = callback(oidc.authorize(app_client, prompt="none", id_token_hint=hint))
    assert params["code"]


def test_id_token_hint_of_another_user_asks_to_sign_in(app, oidc, rp, alice):
    hint = sign_in_elsewhere(app, rp, "bob")
    oidc.sign_in(rp[0])
    response = oidc.authorize(rp[0], id_token_hint=hint)
    assert page_path(response).startswith("/signin/")


def test_id_token_hint_of_another_user_with_prompt_none_answers_login_required(app, oidc, rp,
                                                                             alice):
    hint = sign_in_elsewhere(app, rp, "bob")
    oidc.sign_in(rp[0])
    params = callback(oidc.authorize(rp[0], id_token_hint=hint, prompt="none"))
    assert params["error"] == "login_required"


def _sign(claims: dict, key: RSAKey, kid: str, alg="RS256") -> str:
    return jwt.encode({"alg": alg, "kid": kid}, claims, key)


def test_forged_id_token_hint_is_refused_with_invalid_request(oidc, rp, alice):
    app_client, secret = rp
    first = oidc.sign_in(app_client)
    genuine = oidc.token(app_client, secret, first["code"]).get_json()["id_token"]
    claims = jwt.decode(genuine, KeySet.import_key_set(keys.jwks())).claims
    kid = jwt.decode(genuine, KeySet.import_key_set(keys.jwks())).header["kid"]
    stranger = RSAKey.generate_key(2048)
    header, payload, signature = genuine.split(".")
    tampered_payload = jwt.encode({"alg": "RS256"}, {**claims, "sub": "someone-else"},
                                  stranger).split(".")[1]
    own_key = keys.private_key(keys.active_key())
    forged = [
        "not-a-token",
        _sign(claims, stranger, kid),
        f"{header}.{tampered_payload}.{signature}",
        _sign({**claims, "iss": "https://attacker.example"}, own_key, kid),
    ]
    for hint in forged:
        params = callback(oidc.authorize(app_client, prompt="none", id_token_hint=hint))
        assert params["error"] == "invalid_request", hint
        assert params["iss"] == ISSUER


def test_ui_locales_and_display_are_accepted_and_ignored(oidc, rp, alice):
    params = oidc.sign_in(rp[0], ui_locales="fr-CA fr en", display="popup",
                          claims_locales="de")
    assert params["code"]
    params = callback(oidc.authorize(rp[0], ui_locales="zz", display="touch"))
    assert params["code"]


# --- acr: acr_values and the claims parameter -------------------------------------------


def essential_acr(*values) -> str:
    return json.dumps({"id_token": {"acr": {"essential": True, "values": list(values)}}})


def test_essential_password_acr_in_claims_is_met(client, oidc, rp, alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client, claims=essential_acr("urn:idp:acr:pwd"))
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["acr"] == "urn:idp:acr:pwd"


def test_essential_acr_given_as_single_value_is_met(client, oidc, rp, alice):
    app_client, secret = rp
    request = json.dumps({"id_token": {"acr": {"essential": True, "value": "urn:idp:acr:pwd"}},
                          "userinfo": {"email": None}})
    params = oidc.sign_in(app_client, claims=request)
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["acr"] == "urn:idp:acr:pwd"


def test_essential_unknown_acr_answers_unmet_authentication_requirements(oidc, rp, alice):
    response = oidc.authorize(rp[0], claims=essential_acr("urn:example:acr:retina"))
    params = callback(response)
    assert params["error"] == "unmet_authentication_requirements"
    assert params["state"] == oidc.last_params["state"]
    assert params["iss"] == ISSUER


def test_essential_unknown_acr_with_a_session_answers_unmet_authentication_requirements(
        oidc, rp, alice):
    oidc.sign_in(rp[0])
    for prompt in (None, "none"):
        params = callback(oidc.authorize(rp[0], prompt=prompt,
                                         claims=essential_acr("urn:example:acr:retina")))
        assert params["error"] == "unmet_authentication_requirements"


def test_voluntary_unknown_acr_gives_the_password_acr(client, oidc, rp, alice):
    app_client, secret = rp
    request = json.dumps({"id_token": {"acr": {"values": ["urn:example:acr:retina"]}}})
    params = oidc.sign_in(app_client, claims=request, acr_values="urn:example:acr:other")
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["acr"] == "urn:idp:acr:pwd"


@pytest.mark.parametrize("claims", [
    "{",
    "not json",
    "[]",
    "5",
    "null",
    '"text"',
    "[" * 3000,
    '{"id_token": ' * 1500 + "{}" + "}" * 1500,
    '{"id_token": 5}',
    '{"id_token": {"acr": "urn:idp:acr:pwd"}}',
    '{"id_token": {"acr": {"essential": true, "values": "urn:idp:acr:pwd"}}}',
    '{"id_token": {"acr": {"essential": true, "values": [5]}}}',
    '{"id_token": {"acr": {"essential": true, "value": ["urn:idp:acr:pwd"]}}}',
    '{"id_token": {"acr": {"essential": "yes", "values": ["urn:idp:acr:pwd"]}}}',
])
def test_invalid_claims_parameter_is_refused_with_invalid_request(client, rp, claims):
    params = callback(client.get("/authorize?" + urlencode(base_query(rp[0], claims=claims))))
    assert params["error"] == "invalid_request"
    assert params["iss"] == ISSUER
    assert params["state"] == "st-1"


def test_acr_values_asking_the_password_level_gives_the_password_acr(client, oidc, rp, alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client, acr_values="urn:idp:acr:pwd")
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["acr"] == "urn:idp:acr:pwd"
    assert claims["amr"] == ["pwd"]


# --- POST /authorize --------------------------------------------------------------------


def test_post_authorize_works_like_get(client, oidc, rp, alice):
    app_client, secret = rp
    verifier, challenge = pkce_pair()
    response = client.post("/authorize", data=base_query(
        app_client, state="posted state ✓", nonce="n-post", code_challenge=challenge))
    assert page_path(response).startswith("/signin/")
    params = callback(oidc.follow(oidc.login(response)))
    assert params["state"] == "posted state ✓"
    assert params["iss"] == ISSUER
    oidc.verifier = verifier
    claims = id_token_claims(client, oidc, app_client, secret, params["code"])
    assert claims["nonce"] == "n-post"


def test_post_authorize_errors_are_answered_like_get(client, rp):
    params = callback(client.post("/authorize", data=base_query(rp[0], request="x")))
    assert params["error"] == "request_not_supported"
    pairs = list(base_query(rp[0]).items()) + [("scope", "openid")]
    params = callback(client.post("/authorize", data=urlencode(pairs),
                                  content_type="application/x-www-form-urlencoded"))
    assert params["error"] == "invalid_request"
    assert_error_page(client.post("/authorize", data=base_query(rp[0], redirect_uri=None)))


def test_post_authorize_with_a_json_body_shows_an_error_page(client, rp):
    response = client.post("/authorize", json=base_query(rp[0]))
    assert_error_page(response, REDIRECT_URI)


# --- hostile input ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["state", "nonce", "login_hint", "scope", "claims",
                                  "acr_values", "ui_locales", "code_challenge", "foo"])
def test_oversized_parameter_value_gives_a_clean_error(client, rp, name):
    response = client.get("/authorize?" + urlencode(base_query(rp[0], **{name: "x" * 20000})))
    params = callback(response)
    assert params["error"] == "invalid_request"
    assert params["iss"] == ISSUER
    assert len(response.headers["Location"]) < 2000
    if name != "state":
        assert params["state"] == "st-1"


def test_oversized_parameter_name_gives_a_clean_error(client, rp):
    params = callback(client.get("/authorize?" + urlencode(base_query(rp[0], **{"p" * 500: "1"}))))
    assert params["error"] == "invalid_request"


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_oversized_client_id_or_redirect_uri_shows_an_error_page(client, rp, name):
    response = client.get("/authorize?" + urlencode(base_query(rp[0], **{name: "x" * 100000})))
    assert_error_page(response)


def test_many_unknown_parameters_are_ignored_and_not_kept(client, rp):
    pairs = list(base_query(rp[0]).items()) + [(f"p{i}", "v" * 100) for i in range(5000)]
    response = client.get("/authorize?" + urlencode(pairs))
    assert page_path(response).startswith("/signin/")
    pending = db.session.get(PendingAuthorization, page_path(response).rsplit("/", 1)[1])
    assert set(pending.params) == set(base_query(rp[0]))


def test_oversized_post_body_shows_an_error_page(client, rp):
    response = client.post("/authorize", data=base_query(rp[0], foo="x" * 400_000))
    assert response.status_code == 413
    assert "Location" not in response.headers
    assert 'role="alert"' in response.get_data(as_text=True)


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_nul_character_in_client_id_or_redirect_uri_shows_an_error_page(client, rp, name):
    query = base_query(rp[0])
    query[name] += "\x00"
    assert_error_page(client.get("/authorize?" + urlencode(query)))


@pytest.mark.parametrize("name", ["state", "nonce", "login_hint", "scope"])
def test_nul_character_in_a_parameter_gives_invalid_request(client, rp, name):
    query = base_query(rp[0], nonce="n", login_hint="alice")
    query[name] += "\x00"
    params = callback(client.get("/authorize?" + urlencode(query)))
    assert params["error"] == "invalid_request"


def test_invalid_percent_encoding_and_utf8_never_give_a_server_error(client, rp):
    query = urlencode(base_query(rp[0]))
    for junk in ("state=%ZZ%", "state=%ff%fe", "nonce=%C0%AF", "%00=1", "=x", "&&&"):
        response = client.get(f"/authorize?{query}&{junk}")
        assert response.status_code < 500, junk


def test_pending_url_with_a_hostile_id_shows_an_error_page(client):
    for pending_id in ("x" * 5000, quote("../../etc"), "%00"):
        response = client.get("/signin/" + pending_id)
        assert response.status_code in (400, 404)
        assert 'role="alert"' in response.get_data(as_text=True)
