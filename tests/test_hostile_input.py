"""Malformed, oversized, duplicated or hostile input never gives a 500 or a stack trace."""

import pytest

from tests.conftest import basic_auth

HOSTILE_VALUES = [
    "",
    " ",
    "\x00",
    "%00",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "\u202e\ufeff\U0001f600",
    "a" * 5000,
    "{\"acr\": ",
]


def assert_clean(response):
    body = response.get_data(as_text=True)
    assert response.status_code < 500, body[:300]
    assert "Traceback" not in body
    assert "<script>alert(1)</script>" not in body


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize(
    "name",
    ["client_id", "redirect_uri", "response_type", "scope", "state", "prompt", "max_age",
     "claims", "id_token_hint", "code_challenge", "response_mode", "nonce", "acr_values"],
)
def test_authorize_answers_hostile_parameters_cleanly(client, rp, name, value):
    app_client, _ = rp
    params = {
        "response_type": "code",
        "client_id": app_client.client_id,
        "redirect_uri": app_client.redirect_uris[0],
        "scope": "openid",
        "code_challenge": "x" * 43,
        "code_challenge_method": "S256",
        name: value,
    }
    assert_clean(client.get("/authorize", query_string=params))
    assert_clean(client.post("/authorize", data=params))


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("path", ["/authorize/resume/{}", "/signin/{}", "/consent/{}",
                                  "/terms/{}", "/account/{}"])
def test_step_pages_answer_unknown_ids_with_an_explanation(client, path, value):
    response = client.get(path.format(value.replace("/", "_") or "x"))
    assert_clean(response)
    assert response.status_code in (400, 404)


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("field", ["grant_type", "code", "redirect_uri", "refresh_token",
                                   "code_verifier", "client_id", "client_secret",
                                   "client_assertion", "client_assertion_type", "scope"])
def test_token_endpoint_answers_hostile_fields_with_json_errors(client, rp, field, value):
    app_client, secret = rp
    data = {"grant_type": "authorization_code", "code": "abc",
            "redirect_uri": app_client.redirect_uris[0], field: value}
    response = client.post("/token", data=data, headers=basic_auth(app_client.client_id, secret))
    assert_clean(response)
    assert response.status_code in (400, 401)
    assert "error" in response.get_json()


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect", "/userinfo"])
def test_api_endpoints_refuse_json_bodies_and_huge_bodies_with_json(client, path):
    response = client.post(path, json={"grant_type": "client_credentials", "token": "x"})
    assert_clean(response)
    assert response.status_code in (400, 401)
    response = client.post(path, data={"token": "x" * 300_000})
    assert_clean(response)
    assert response.status_code in (400, 401, 413)
    assert response.is_json


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic abc", "Bearer \x00", "x" * 5000,
                                    "Bearer a b c"])
def test_userinfo_answers_malformed_authorization_headers_with_401(client, header):
    response = client.get("/userinfo", headers={"Authorization": header})
    assert_clean(response)
    assert response.status_code in (400, 401)


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("name", ["id_token_hint", "post_logout_redirect_uri", "client_id",
                                  "state", "ui_locales"])
def test_logout_answers_hostile_parameters_cleanly(client, name, value):
    response = client.get("/logout", query_string={name: value})
    assert_clean(response)
    assert response.status_code != 302, "logout must not redirect without a valid request"


def test_unknown_pages_and_methods_get_pages_not_stack_traces(client):
    assert_clean(client.get("/no/such/page"))
    assert_clean(client.delete("/authorize"))
    assert_clean(client.put("/token"))
    response = client.get("/token")
    assert response.status_code == 405
    assert response.is_json
