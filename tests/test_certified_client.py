"""End to end with an independent, certified OpenID Connect client library (pyoidc).

The identity provider runs as a real server (gunicorn, ``wsgi:app``) on a free loopback port,
set up the way an operator would: ``idp db upgrade``, ``idp clients create``, ``idp users
create``. pyoidc reads the discovery document, builds a code + PKCE (S256) + nonce request,
parses the authorization response, redeems the code with client_secret_basic and verifies the
ID token (signature against the JWKS, ``iss``, ``aud``, ``nonce``), then calls userinfo. The
hosted sign-in form is filled in with ``requests`` as a browser would.

The sign-in steps of the MFA plugin are not part of this run (``IDP_PLUGINS`` is empty): it
proves the protocol; the plugin's pages have their own tests.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from oic.oic import Client as OidcClient
from oic.oic.message import (
    AccessTokenResponse,
    AuthorizationRequest,
    AuthorizationResponse,
    IdToken,
    OpenIDSchema,
    RegistrationResponse,
)
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIRECT_URI = "https://rp.example/callback"
USERNAME = "certified-user"
PASSWORD = "Certified-Password-1"
START_TIMEOUT = 30  # seconds for the server to answer /healthz
HTTP_TIMEOUT = 10  # seconds for any single request to it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(issuer: str, instance: Path) -> dict[str, str]:
    """This process's environment without any IDP_* setting, plus the server's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_ENV="development",
        IDP_ISSUER=issuer,
        IDP_INSTANCE_PATH=str(instance),
        IDP_SECRET_KEY=secrets.token_urlsafe(48),
        IDP_PLUGINS="",
        IDP_LOG_LEVEL="WARNING",
    )
    return env


def idp_command(env: dict, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(BIN / "idp"), *args], cwd=ROOT, env=env, input=stdin, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, f"idp {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"the server did not answer {url} within {START_TIMEOUT}s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """A running identity provider with one client and one user; stopped afterwards."""
    instance = tmp_path_factory.mktemp("certified") / "instance"
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = server_environment(issuer, instance)

    idp_command(env, "db", "upgrade")
    registered = json.loads(idp_command(
        env, "clients", "create", "--name", "Certified RP", "--redirect-uri", REDIRECT_URI,
        "--auth-method", "client_secret_basic", "--scope", "openid profile email", "--json",
    ))
    idp_command(env, "users", "create", "--username", USERNAME,
                "--email", "certified@example.com", "--password-stdin", stdin=PASSWORD + "\n")

    log = instance.parent / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--timeout", "30", "wsgi:app"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(process, issuer + "/healthz", log)
        yield {"issuer": issuer, "client": registered}
    finally:
        stop(process)


@pytest.fixture
def rp(provider) -> OidcClient:
    """pyoidc's client, configured from discovery and the registration printed by the CLI."""
    client = OidcClient(client_authn_method=CLIENT_AUTHN_METHOD)
    client.timeout = HTTP_TIMEOUT
    client.provider_config(provider["issuer"])
    registered = provider["client"]
    client.store_registration_info(RegistrationResponse(
        client_id=registered["client_id"],
        client_secret=registered["client_secret"],
        redirect_uris=registered["redirect_uris"],
        token_endpoint_auth_method="client_secret_basic",
    ))
    client.redirect_uris = registered["redirect_uris"]
    return client


# --- a browser, as far as the sign-in form needs one ------------------------------------------


class SignInForm(HTMLParser):
    """The page's form: its action, its inputs (hidden ones with their values) and labels."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.inputs: list[dict] = []
        self.labels: dict[str, str] = {}
        self._label_for = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action") or ""
        elif tag == "input":
            self.inputs.append(attrs)
        elif tag == "label":
            self._label_for = attrs.get("for")

    def handle_data(self, data):
        if self._label_for and data.strip():
            self.labels[data.strip()] = self._label_for

    def handle_endtag(self, tag):
        if tag == "label":
            self._label_for = None

    def fill(self, by_label: dict[str, str], button: str) -> dict[str, str]:
        by_id = {i.get("id"): i for i in self.inputs}
        data = {i["name"]: i.get("value", "") for i in self.inputs
                if i.get("type") == "hidden" and i.get("name")}
        for label, value in by_label.items():
            data[by_id[self.labels[label]]["name"]] = value
        submit = next(i for i in self.inputs
                      if i.get("type") == "submit" and i.get("value") == button)
        data[submit["name"]] = submit["value"]
        return data


def browse_until_leaving(session: requests.Session, response, issuer: str):
    """Follow redirects while they stay on the identity provider; return the last response."""
    for _ in range(10):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = urljoin(response.url, response.headers["Location"])
        if not location.startswith(issuer + "/"):
            return response
        response = session.get(location, allow_redirects=False, timeout=HTTP_TIMEOUT)
    raise AssertionError("too many redirects")


def sign_in_with_the_hosted_form(authorization_url: str, issuer: str) -> str:
    """Open the authorization URL, log in; returns the redirect to the client."""
    browser = requests.Session()
    first = browser.get(authorization_url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    page = browse_until_leaving(browser, first, issuer)
    assert page.status_code == 200, page.text[:500]
    form = SignInForm()
    form.feed(page.text)
    data = form.fill({"User Name": USERNAME, "Password": PASSWORD}, button="Log In")
    assert data.get("csrf_token")
    posted = browser.post(urljoin(page.url, form.action), data=data, allow_redirects=False,
                          timeout=HTTP_TIMEOUT)
    leaving = browse_until_leaving(browser, posted, issuer)
    assert leaving.status_code == 302, leaving.text[:500]
    return leaving.headers["Location"]


# --- the tests --------------------------------------------------------------------------------


def test_certified_client_reads_the_discovery_document_and_the_jwks(provider, rp):
    info = rp.provider_info
    issuer = provider["issuer"]
    assert info["issuer"] == issuer
    assert rp.authorization_endpoint == issuer + "/authorize"
    assert rp.token_endpoint == issuer + "/token"
    assert rp.userinfo_endpoint == issuer + "/userinfo"
    assert "S256" in info["code_challenge_methods_supported"]
    assert "client_secret_basic" in info["token_endpoint_auth_methods_supported"]
    assert rp.keyjar.get_issuer_keys(issuer), "the JWKS was not loaded"


def test_certified_client_completes_code_flow_with_pkce_and_verifies_the_id_token(
    provider, rp
):
    issuer = provider["issuer"]
    client_id = provider["client"]["client_id"]
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    pkce, verifier = rp.add_code_challenge()
    assert pkce["code_challenge_method"] == "S256"
    request_args = {
        "response_type": "code",
        "scope": ["openid", "profile", "email"],
        "redirect_uri": REDIRECT_URI,
        "client_id": client_id,
        "state": state,
        "nonce": nonce,
        **pkce,
    }
    authorization_url, _, _, _ = rp.request_info(AuthorizationRequest, method="GET",
                                                 request_args=request_args)
    assert authorization_url.startswith(issuer + "/authorize?")

    callback = sign_in_with_the_hosted_form(authorization_url, issuer)

    assert callback.startswith(REDIRECT_URI + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert query["iss"] == issuer
    # pyoidc checks the RFC 9207 ``iss`` against the discovered issuer here.
    authorization = rp.parse_response(AuthorizationResponse, info=callback,
                                      sformat="urlencoded")
    assert isinstance(authorization, AuthorizationResponse)
    assert authorization["state"] == state

    tokens = rp.do_access_token_request(
        state=state,
        request_args={"code": authorization["code"], "code_verifier": verifier,
                      "redirect_uri": REDIRECT_URI},
        authn_method="client_secret_basic",
    )

    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    id_token = tokens["id_token"]
    # The library verified the signature with the JWKS, iss, aud, exp/iat and the nonce.
    assert isinstance(id_token, IdToken)
    assert id_token.jws_header["alg"] == "RS256"
    assert id_token["iss"] == issuer
    assert client_id in id_token["aud"]
    assert id_token["nonce"] == nonce
    assert id_token["amr"] == ["pwd"]
    assert id_token["acr"] == "urn:idp:acr:pwd"
    assert {"sub", "auth_time", "sid", "at_hash", "exp", "iat"} <= set(id_token)

    userinfo = rp.do_user_info_request(state=state)

    assert isinstance(userinfo, OpenIDSchema), userinfo.to_dict()
    assert userinfo["sub"] == id_token["sub"]
    assert userinfo["preferred_username"] == USERNAME
    assert userinfo["email"] == "certified@example.com"


def test_certified_client_refuses_an_id_token_whose_nonce_it_did_not_send(provider, rp):
    """The library's nonce check is live in this run: a changed nonce is refused."""
    from oic.exception import PyoidcError

    issuer = provider["issuer"]
    state = secrets.token_urlsafe(16)
    pkce, verifier = rp.add_code_challenge()
    authorization_url, _, _, _ = rp.request_info(AuthorizationRequest, method="GET", request_args={
        "response_type": "code", "scope": ["openid"], "redirect_uri": REDIRECT_URI,
        "client_id": provider["client"]["client_id"], "state": state, "nonce": "sent", **pkce,
    })
    callback = sign_in_with_the_hosted_form(authorization_url, issuer)
    authorization = rp.parse_response(AuthorizationResponse, info=callback,
                                      sformat="urlencoded")
    rp.state2nonce[state] = "expected-something-else"

    with pytest.raises(PyoidcError, match="nonce"):
        rp.do_access_token_request(
            state=state,
            request_args={"code": authorization["code"], "code_verifier": verifier,
                          "redirect_uri": REDIRECT_URI},
            authn_method="client_secret_basic",
        )
