"""``private_key_jwt`` with a ``jwks_uri``: the keys are fetched from the client's server
(here a real HTTP server on 127.0.0.1) without following redirects, within a short time,
cached per client, and never fetched once per request: an assertion nobody signed, with a
``kid`` the keys do not have, or a failing server wait for the refetch interval."""

from __future__ import annotations

import json
import time

import pytest

from idp.oauth.client_keys import MAX_BYTES, ClientKeyCache
from tests.conftest import PRODUCTION_SETTINGS
from tests.http_receivers import WebhookReceiver
from tests.token_helpers import (
    assertion_params,
    client_assertion,
    public_jwks,
    rsa_key,
    service_client,
)

CACHE_SECONDS = 300
REFETCH_SECONDS = 60


class Clock:
    """The cache's clock, moved by the test instead of waiting."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def app_config():
    return {"IDP_CLIENT_JWKS_CACHE_SECONDS": CACHE_SECONDS,
            "IDP_CLIENT_JWKS_REFETCH_SECONDS": REFETCH_SECONDS}


@pytest.fixture
def clock(app) -> Clock:
    clock = Clock()
    app.extensions["idp.client_keys"] = ClientKeyCache(clock=clock)
    return clock


@pytest.fixture
def key():
    return rsa_key()


@pytest.fixture
def keys_server(request, key) -> WebhookReceiver:
    return WebhookReceiver.started(request, body=json.dumps(public_jwks(key)).encode())


@pytest.fixture
def service(app, keys_server, clock):
    row, _ = service_client(auth_method="private_key_jwt",
                            jwks_uri=keys_server.url + "/jwks.json")
    return row


def token_request(http, key, client_id, **claims):
    data = {"grant_type": "client_credentials",
            **assertion_params(client_assertion(key, client_id, **claims))}
    return http.post("/token", data=data)


def fetches(server: WebhookReceiver) -> int:
    return len([r for r in server.requests if r.method == "GET"])


def test_the_keys_are_fetched_once_and_used_for_the_next_assertions(client, service, key,
                                                                   keys_server):
    for _ in range(3):
        response = token_request(client, key, service.client_id)
        assert response.status_code == 200, response.get_json()
    assert fetches(keys_server) == 1
    assert keys_server.requests[0].path == "/jwks.json"


def test_assertions_nobody_signed_do_not_make_the_idp_fetch_the_keys_each_time(
        client, service, keys_server, clock):
    for _ in range(10):
        stranger = rsa_key()  # a new kid every time
        response = token_request(client, stranger, service.client_id)
        assert response.status_code in (400, 401)
        assert response.get_json()["error"] == "invalid_client"
    assert fetches(keys_server) == 1

    clock.advance(REFETCH_SECONDS)
    token_request(client, rsa_key(), service.client_id)
    assert fetches(keys_server) == 2


def test_keys_the_client_rotated_are_fetched_once_the_refetch_interval_passed(
        client, service, key, keys_server, clock):
    assert token_request(client, key, service.client_id).status_code == 200
    new_key = rsa_key()
    keys_server.respond(body=json.dumps(public_jwks(new_key)).encode())

    assert token_request(client, new_key, service.client_id).status_code in (400, 401)
    assert fetches(keys_server) == 1
    clock.advance(REFETCH_SECONDS)
    response = token_request(client, new_key, service.client_id)
    assert response.status_code == 200, response.get_json()
    assert fetches(keys_server) == 2


def test_a_failing_jwks_uri_is_not_asked_again_before_the_refetch_interval(
        client, service, key, keys_server, clock):
    keys_server.respond(status=500, body=b"{}")
    for _ in range(5):
        assert token_request(client, key, service.client_id).get_json()["error"] == (
            "invalid_client")
    assert fetches(keys_server) == 1

    keys_server.respond(body=json.dumps(public_jwks(key)).encode())
    clock.advance(REFETCH_SECONDS)
    assert token_request(client, key, service.client_id).status_code == 200
    assert fetches(keys_server) == 2


def test_cached_keys_are_fetched_again_when_their_cache_time_is_over(client, service, key,
                                                                    keys_server, clock):
    assert token_request(client, key, service.client_id).status_code == 200
    clock.advance(CACHE_SECONDS)
    assert token_request(client, key, service.client_id).status_code == 200
    assert fetches(keys_server) == 2


def test_a_redirect_from_the_jwks_uri_is_not_followed(request, client, service, key,
                                                      keys_server):
    elsewhere = WebhookReceiver.started(request, body=json.dumps(public_jwks(key)).encode())
    keys_server.respond(status=302, body=b"", headers={"Location": elsewhere.url + "/jwks"})
    response = token_request(client, key, service.client_id)
    assert response.get_json()["error"] == "invalid_client"
    assert fetches(keys_server) == 1
    assert elsewhere.requests == []


def test_a_jwks_uri_that_answers_too_much_is_refused(client, service, key, keys_server):
    keys = public_jwks(key)
    keys["padding"] = "x" * MAX_BYTES
    keys_server.respond(body=json.dumps(keys).encode())
    assert token_request(client, key, service.client_id).get_json()["error"] == (
        "invalid_client")


def test_a_slow_jwks_uri_is_given_up_after_the_timeout(app, client, service, key,
                                                       keys_server):
    app.config["IDP_CLIENT_JWKS_TIMEOUT"] = 0.3
    keys_server.respond(body=json.dumps(public_jwks(key)).encode(), delay=3.0)
    started = time.monotonic()
    response = token_request(client, key, service.client_id)
    assert response.get_json()["error"] == "invalid_client"
    assert time.monotonic() - started < 2.0


# --- production: the target is checked again when the keys are fetched -----------------


@pytest.fixture
def production(production_app):
    """``production(**settings)``: a production application, its context pushed."""
    return production_app


def production_request(app, key, client_id):
    data = {"grant_type": "client_credentials", **assertion_params(client_assertion(
        key, client_id, aud=PRODUCTION_SETTINGS["IDP_ISSUER"] + "/token"))}
    return app.test_client().post("/token", data=data,
                                  base_url=PRODUCTION_SETTINGS["IDP_ISSUER"])


def test_in_production_keys_are_not_fetched_from_a_name_that_now_resolves_to_loopback(
        production, key, keys_server):
    app = production()
    # Registered when the name pointed elsewhere; today it resolves to 127.0.0.1.
    row, _ = service_client(auth_method="private_key_jwt",
                            jwks_uri=f"http://localhost:{keys_server.port}/jwks.json")
    response = production_request(app, key, row.client_id)
    assert response.get_json()["error"] == "invalid_client"
    assert keys_server.requests == []


def test_in_production_the_operator_may_allow_private_network_targets(production, key,
                                                                      keys_server):
    app = production(IDP_ALLOW_PRIVATE_NETWORK_TARGETS="1")
    row, _ = service_client(auth_method="private_key_jwt",
                            jwks_uri=f"http://localhost:{keys_server.port}/jwks.json")
    response = production_request(app, key, row.client_id)
    assert response.status_code == 200, response.get_json()
    assert fetches(keys_server) == 1
