"""What a client may register: https URIs (http only on loopback, or a native app's
private-use scheme), refused otherwise in production and warned about in development; and in
production, back-channel logout URIs and ``jwks_uri`` that reach only public addresses."""

from __future__ import annotations

import json

import pytest

from idp.extensions import db
from idp.models import Client
from idp.oauth import uris

SERVICE = ["--grant-type", "client_credentials"]
PUBLIC_ADDRESS = "93.184.215.14"  # an address on the internet (no DNS needed)


@pytest.fixture
def production(production_app):
    """``production(**settings)``: the command line of a production application."""
    return lambda **settings: production_app(**settings).test_cli_runner()


def create(runner, *args):
    return runner.invoke(args=["clients", "create", "--name", "App", *args])


def assert_refused(result, option: str, says: str):
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert option in result.output and says in result.output, result.output
    assert db.session.scalar(db.select(Client.id)) is None


def assert_created(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- redirect and post-logout URIs ------------------------------------------------------


@pytest.mark.parametrize(("option", "uri"), [
    ("--redirect-uri", "http://shop.example/cb"),
    ("--post-logout-redirect-uri", "http://shop.example/bye"),
])
def test_production_refuses_a_browser_uri_that_is_not_https(production, option, uri):
    args = [option, uri] if option == "--redirect-uri" else [
        "--redirect-uri", "https://shop.example/cb", option, uri]
    assert_refused(create(production(), *args), option, "https")


def test_development_accepts_a_plain_http_redirect_uri_with_a_warning(runner):
    result = create(runner, "--redirect-uri", "http://shop.example/cb",
                    "--post-logout-redirect-uri", "http://shop.example/bye")
    data = assert_created(result)
    assert data["redirect_uris"] == ["http://shop.example/cb"]
    assert "Warning: --redirect-uri 'http://shop.example/cb'" in result.stderr
    assert "Warning: --post-logout-redirect-uri 'http://shop.example/bye'" in result.stderr
    assert "IDP_ENV=production" in result.stderr


def test_production_accepts_loopback_http_and_native_app_schemes_without_a_warning(production):
    accepted = ["http://127.0.0.1:8080/cb", "http://[::1]:8080/cb", "http://localhost:8080/cb",
                "com.example.app:/oauth2redirect"]
    args = [a for uri in accepted for a in ("--redirect-uri", uri)]
    result = create(production(), *args, "--auth-method", "none",
                    "--post-logout-redirect-uri", "com.example.app:/signed-out")
    data = assert_created(result)
    assert data["redirect_uris"] == accepted
    assert data["post_logout_redirect_uris"] == ["com.example.app:/signed-out"]
    assert result.stderr == ""


def test_a_private_use_scheme_must_be_a_reverse_domain_name(runner):
    data = assert_created(create(runner, "--client-id", "native", "--auth-method", "none",
                                 "--redirect-uri", "com.example.app:/cb"))
    assert data["redirect_uris"] == ["com.example.app:/cb"]
    for uri in ("myapp:/cb", "javascript:alert(1)", "data:text/html,hi"):
        result = create(runner, "--redirect-uri", uri)
        assert result.exit_code != 0 and "--redirect-uri" in result.output, result.output
    result = create(runner, "--redirect-uri", "https://shop.example/cb",
                    "--backchannel-logout-uri", "com.example.app:/logout")
    assert result.exit_code != 0 and "--backchannel-logout-uri" in result.output


@pytest.mark.parametrize("uri", [
    "https://user:password@shop.example/cb",
    "https://shop.example/cb#",
    "https://shop.example:99999/cb",
])
def test_a_uri_with_credentials_an_empty_fragment_or_a_bad_port_is_refused(runner, uri):
    assert_refused(create(runner, "--redirect-uri", uri), "--redirect-uri", uri)


def test_update_applies_the_same_rules(production):
    cli = production()
    assert_created(create(cli, "--client-id", "shop", "--redirect-uri",
                          "https://shop.example/cb"))
    result = cli.invoke(args=["clients", "update", "shop", "--redirect-uri",
                              "http://shop.example/cb"])
    assert result.exit_code != 0 and "https" in result.output
    assert db.session.scalar(db.select(Client.redirect_uris)) == ["https://shop.example/cb"]


# --- URIs the IdP calls itself ----------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1", "localhost", "[::1]", "10.0.0.5", "172.16.3.4", "192.168.1.2", "100.64.0.1",
    "169.254.169.254", "169.254.10.10", "[fe80::1]", "[fd00:ec2::254]", "[fd12:3456::1]",
    "[::ffff:127.0.0.1]", "0.0.0.0",  # noqa: S104 - an address refused, nothing binds
])
@pytest.mark.parametrize("option", ["--backchannel-logout-uri", "--jwks-uri"])
def test_production_refuses_an_outbound_uri_that_reaches_an_internal_address(
        production, option, address):
    args = ["--redirect-uri", "https://shop.example/cb", option, f"https://{address}/hook"]
    if option == "--jwks-uri":
        args += ["--auth-method", "private_key_jwt"]
    assert_refused(create(production(), *args), option, "is refused")


def test_production_accepts_an_outbound_uri_only_over_https_to_a_public_address(production):
    cli = production()
    result = create(cli, "--redirect-uri", "https://shop.example/cb",
                    "--backchannel-logout-uri", f"http://{PUBLIC_ADDRESS}/bc")
    assert_refused(result, "--backchannel-logout-uri", "https")
    data = assert_created(create(
        cli, "--redirect-uri", "https://shop.example/cb",
        "--backchannel-logout-uri", f"https://{PUBLIC_ADDRESS}/bc",
        "--auth-method", "private_key_jwt", "--jwks-uri", f"https://{PUBLIC_ADDRESS}/jwks"))
    assert data["backchannel_logout_uri"] == f"https://{PUBLIC_ADDRESS}/bc"
    assert data["jwks_uri"] == f"https://{PUBLIC_ADDRESS}/jwks"


def test_the_operator_may_allow_private_networks_but_never_metadata_or_link_local(production):
    cli = production(IDP_ALLOW_PRIVATE_NETWORK_TARGETS="1")
    base = ["--redirect-uri", "https://shop.example/cb", "--backchannel-logout-uri"]
    data = assert_created(create(cli, "--client-id", "lan", *base, "https://10.0.0.5/bc"))
    assert data["backchannel_logout_uri"] == "https://10.0.0.5/bc"
    assert create(cli, *base, "http://127.0.0.1:5001/bc").exit_code == 0
    for refused in ("https://169.254.169.254/latest", "https://[fd00:ec2::254]/x",
                    "https://[fe80::1]/bc"):
        result = create(cli, *base, refused)
        assert result.exit_code != 0 and "is refused" in result.output, result.output


# --- one rule for every place that registers clients ------------------------------------


def test_the_rules_check_a_client_model_without_the_command_line():
    config = {"IDP_ENV": "production"}
    good = Client(redirect_uris=["https://shop.example/cb", "com.example.app:/cb"],
                  post_logout_redirect_uris=["http://127.0.0.1/bye"],
                  backchannel_logout_uri=f"https://{PUBLIC_ADDRESS}/bc")
    assert uris.check_client_uris(good, config) == []

    bad = Client(redirect_uris=["https://shop.example/cb"],
                 backchannel_logout_uri="https://169.254.169.254/latest")
    with pytest.raises(uris.UriRefused) as refused:
        uris.check_client_uris(bad, config)
    assert refused.value.field == "backchannel_logout_uri"
    assert "metadata" in refused.value.reason

    plain = Client(redirect_uris=["http://shop.example/cb"])
    assert "production" in uris.check_client_uris(plain, {"IDP_ENV": "development"})[0]
    with pytest.raises(uris.UriRefused, match="https"):
        uris.check_client_uris(plain, config)
