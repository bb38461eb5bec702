"""RP-initiated logout (``end_session_endpoint``) and back-channel logout tokens."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from idp.extensions import db
from idp.models import SsoSession
from tests.conftest import ISSUER, PASSWORD, forms, make_client, make_user

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
WAIT = 5  # seconds: the longest a test waits for the receiver's thread to stop
SLOW = 10  # seconds a slow receiver takes to answer (released when the test ends)


# --- helpers ----------------------------------------------------------------------------


def decode(client, token):
    keyset = KeySet.import_key_set(client.get("/jwks.json").get_json())
    return jwt.decode(token, keyset)


def tokens_for(oidc, rp, secret, sso=False):
    """Sign in to ``rp`` (with the password, or by SSO) and redeem the code."""
    params = oidc.callback_params(oidc.follow(oidc.authorize(rp))) if sso else oidc.sign_in(rp)
    response = oidc.token(rp, secret, params["code"])
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def logout(client, **params):
    return client.get("/logout?" + urlencode(params))


def silent_authorize(oidc, rp):
    """``prompt=none``: the error (or code) the client receives."""
    return oidc.callback_params(oidc.authorize(rp, prompt="none"))


def live_sessions() -> int:
    db.session.expire_all()
    return sum(1 for s in db.session.scalars(db.select(SsoSession)) if s.is_live)


def sign_out_form(response) -> dict:
    found = [f for f in forms(response.get_data(as_text=True)) if f["action"] == "/logout"]
    assert found, response.get_data(as_text=True)[:1000]
    return found[0]


@functools.cache
def attacker_key() -> RSAKey:
    return RSAKey.generate_key(2048)


def forged_id_token(claims: dict, kid: str) -> str:
    return jwt.encode({"alg": "RS256", "kid": kid}, claims, attacker_key())


# --- a real back-channel receiver -------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs; ``delay`` makes it answer slowly."""

    def __init__(self, delay: float = 0.0):
        self.received: queue.Queue = queue.Queue()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                receiver.received.put({
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "form": {k: v[0] for k, v in parse_qs(body).items()},
                })
                if delay:
                    receiver.release.wait(delay)
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", parse_qs(urlsplit(self.path).query)["to"][0])
                else:
                    self.send_response(200)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()

            def do_GET(self):  # noqa: N802 - http.server's naming
                receiver.received.put({"path": self.path, "method": "GET"})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def all_received(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(self.received.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def slow_receiver():
    server = Receiver(delay=SLOW)
    yield server
    server.stop()


def closed_port_url(path: str) -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# --- RP-initiated logout ----------------------------------------------------------------


def test_logout_with_valid_id_token_hint_and_registered_uri_redirects_at_once_with_state(
    client, oidc, rp, alice
):
    app_client, secret = rp
    id_token = tokens_for(oidc, app_client, secret)["id_token"]

    response = logout(client, id_token_hint=id_token,
                      post_logout_redirect_uri="https://rp.example/bye", state="s-42")

    assert response.status_code == 302
    assert response.headers["Location"] == "https://rp.example/bye?state=s-42"
    assert live_sessions() == 0


def test_logout_with_hint_and_client_id_redirects_without_state_when_none_was_sent(
    client, oidc, rp, alice
):
    app_client, secret = rp
    id_token = tokens_for(oidc, app_client, secret)["id_token"]

    response = logout(client, id_token_hint=id_token, client_id=app_client.client_id,
                      post_logout_redirect_uri="https://rp.example/bye")

    assert response.status_code == 302
    assert response.headers["Location"] == "https://rp.example/bye"


def test_unregistered_post_logout_redirect_uri_is_never_redirected_to(client, oidc, rp, alice):
    app_client, secret = rp
    id_token = tokens_for(oidc, app_client, secret)["id_token"]

    response = logout(client, id_token_hint=id_token,
                      post_logout_redirect_uri="https://evil.example/bye", state="s-1")

    assert response.status_code != 302
    assert "Location" not in response.headers
    assert "evil.example" not in response.get_data(as_text=True)


def test_registered_uri_of_another_client_is_never_redirected_to(client, oidc, rp, alice):
    app_client, secret = rp
    make_client(client_id="other-app", post_logout_redirect_uris=["https://other.example/bye"])
    id_token = tokens_for(oidc, app_client, secret)["id_token"]

    response = logout(client, id_token_hint=id_token,
                      post_logout_redirect_uri="https://other.example/bye")

    assert "Location" not in response.headers


def test_logout_without_hint_asks_sign_out_and_ends_session_only_after_the_button(
    client, oidc, rp, alice
):
    app_client, secret = rp
    tokens_for(oidc, app_client, secret)

    page = logout(client, client_id=app_client.client_id,
                  post_logout_redirect_uri="https://rp.example/bye", state="s-7")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Sign Out</h1>" in html
    assert '<button type="submit" class="button primary">Sign Out</button>' in html
    assert live_sessions() == 1
    assert "code" in silent_authorize(oidc, app_client)

    form = sign_out_form(page)
    assert form["fields"]["csrf_token"]
    response = client.post("/logout", data=form["fields"])

    assert response.status_code == 302
    assert response.headers["Location"] == "https://rp.example/bye?state=s-7"
    assert live_sessions() == 0


def test_sign_out_button_without_redirect_uri_shows_the_signed_out_page(
    client, oidc, rp, alice
):
    app_client, secret = rp
    tokens_for(oidc, app_client, secret)

    form = sign_out_form(client.get("/logout"))
    response = client.post("/logout", data=form["fields"])

    assert response.status_code == 200
    assert "You are signed out" in response.get_data(as_text=True)
    assert live_sessions() == 0


def test_sign_out_post_without_csrf_token_does_not_end_the_session(client, oidc, rp, alice):
    app_client, secret = rp
    tokens_for(oidc, app_client, secret)
    fields = sign_out_form(client.get("/logout"))["fields"]
    fields.pop("csrf_token")

    response = client.post("/logout", data=fields)

    assert response.status_code == 400
    assert 'role="alert"' in response.get_data(as_text=True)
    assert live_sessions() == 1


def test_logout_without_hint_does_not_redirect_before_confirmation(client, oidc, rp, alice):
    app_client, secret = rp
    tokens_for(oidc, app_client, secret)

    response = client.post("/logout", data={
        "client_id": app_client.client_id,
        "post_logout_redirect_uri": "https://rp.example/bye",
    })

    assert "Location" not in response.headers
    assert "<h1>Sign Out</h1>" in response.get_data(as_text=True)
    assert live_sessions() == 1


def test_forged_id_token_hint_shows_an_error_page_and_keeps_the_session(
    client, oidc, rp, alice
):
    app_client, secret = rp
    id_token = tokens_for(oidc, app_client, secret)["id_token"]
    real = decode(client, id_token)
    forged = forged_id_token(real.claims, kid=real.header["kid"])

    response = logout(client, id_token_hint=forged,
                      post_logout_redirect_uri="https://rp.example/bye", state="s-1")

    assert response.status_code == 400
    assert "Location" not in response.headers
    html = response.get_data(as_text=True)
    assert 'role="alert"' in html
    assert "not been signed out" in html
    assert live_sessions() == 1


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (
        json.dumps(header).encode(), json.dumps(claims).encode(), signature))


def public_key_as_hmac_secret(client, claims: dict) -> str:
    """The old "alg confusion" attack: HS256 keyed with the server's public key."""
    jwk = client.get("/jwks.json").get_json()["keys"][0]
    pem = RSAKey.import_key(jwk).as_pem(private=False)
    head_and_body = unsigned({"alg": "HS256", "kid": jwk["kid"]}, claims).rsplit(".", 1)[0]
    signature = hmac.new(pem, head_and_body.encode(), hashlib.sha256).digest()
    return head_and_body + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.mark.parametrize("kind", ["not_a_jwt", "three_garbage_parts", "alg_none",
                                  "hs256_with_public_key", "unknown_kid", "oversized"])
def test_hostile_id_token_hint_shows_an_error_page_and_never_redirects(
    client, oidc, rp, alice, kind
):
    app_client, secret = rp
    claims = decode(client, tokens_for(oidc, app_client, secret)["id_token"]).claims
    hints = {
        "not_a_jwt": lambda: "abc",
        "three_garbage_parts": lambda: "a.b.c",
        "alg_none": lambda: unsigned({"alg": "none"}, claims),
        "hs256_with_public_key": lambda: public_key_as_hmac_secret(client, claims),
        "unknown_kid": lambda: forged_id_token(claims, kid="no-such-key"),
        "oversized": lambda: "a" * 3000 + "." + "b" * 3000 + "." + "c" * 3000,
    }

    response = logout(client, id_token_hint=hints[kind](),
                      post_logout_redirect_uri="https://rp.example/bye")

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert 'role="alert"' in response.get_data(as_text=True)
    assert live_sessions() == 1


def test_id_token_hint_for_another_client_id_shows_an_error_page(client, oidc, rp, alice):
    app_client, secret = rp
    other, _ = make_client(client_id="other-app")
    id_token = tokens_for(oidc, app_client, secret)["id_token"]

    response = logout(client, id_token_hint=id_token, client_id=other.client_id,
                      post_logout_redirect_uri="https://rp.example/bye")

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert live_sessions() == 1


def test_after_logout_prompt_none_answers_login_required_and_authorize_asks_the_password(
    client, oidc, rp, alice
):
    app_client, secret = rp
    id_token = tokens_for(oidc, app_client, secret)["id_token"]
    assert "code" in silent_authorize(oidc, app_client)

    logout(client, id_token_hint=id_token, post_logout_redirect_uri="https://rp.example/bye")

    answer = silent_authorize(oidc, app_client)
    assert answer["error"] == "login_required"
    assert "code" not in answer
    response = oidc.authorize(app_client)
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path.startswith("/signin/")
    page = client.get(response.headers["Location"])
    assert "Log In" in page.get_data(as_text=True)
    assert oidc.callback_params(oidc.follow(oidc.login(response, password=PASSWORD)))["code"]


# --- back-channel logout ----------------------------------------------------------------


def test_back_channel_logout_token_goes_to_every_client_of_the_session(
    client, oidc, alice, receiver
):
    first, first_secret = make_client(client_id="rp-one",
                                      backchannel_logout_uri=receiver.url("/one/logout"))
    second, second_secret = make_client(client_id="rp-two",
                                        backchannel_logout_uri=receiver.url("/two/logout"))
    make_client(client_id="rp-idle", backchannel_logout_uri=receiver.url("/idle/logout"))
    id_token = tokens_for(oidc, first, first_secret)["id_token"]
    second_id_token = tokens_for(oidc, second, second_secret, sso=True)["id_token"]
    sid = decode(client, id_token).claims["sid"]
    assert decode(client, second_id_token).claims["sid"] == sid

    response = logout(client, id_token_hint=id_token,
                      post_logout_redirect_uri="https://rp.example/bye")
    assert response.status_code == 302

    received = {r["path"]: r for r in receiver.all_received()}
    assert set(received) == {"/one/logout", "/two/logout"}
    keyset = KeySet.import_key_set(client.get("/jwks.json").get_json())
    for path, client_id in (("/one/logout", "rp-one"), ("/two/logout", "rp-two")):
        request = received[path]
        assert request["content_type"] == "application/x-www-form-urlencoded"
        token = jwt.decode(request["form"]["logout_token"], keyset)
        assert token.header["typ"] == "logout+jwt"
        claims = token.claims
        assert claims["iss"] == ISSUER
        assert claims["aud"] == client_id
        assert claims["sub"] == alice.sub
        assert claims["sid"] == sid
        assert BACKCHANNEL_EVENT in claims["events"]
        assert "nonce" not in claims
        assert claims["jti"]
        now = time.time()
        assert claims["iat"] <= now + 5
        assert now < claims["exp"] <= now + 600
    jtis = {jwt.decode(r["form"]["logout_token"], keyset).claims["jti"]
            for r in received.values()}
    assert len(jtis) == 2


def test_a_client_not_signed_into_the_session_receives_no_logout_token(
    client, oidc, alice, receiver
):
    signed_in, secret = make_client(client_id="rp-one")
    make_client(client_id="rp-idle", backchannel_logout_uri=receiver.url("/idle/logout"))
    id_token = tokens_for(oidc, signed_in, secret)["id_token"]

    logout(client, id_token_hint=id_token)

    assert receiver.all_received() == []
    assert live_sessions() == 0


def test_a_receiver_that_is_down_does_not_break_the_logout(client, oidc, alice, receiver):
    down, down_secret = make_client(client_id="rp-down",
                                    backchannel_logout_uri=closed_port_url("/logout"))
    up, up_secret = make_client(client_id="rp-up",
                                backchannel_logout_uri=receiver.url("/up/logout"))
    id_token = tokens_for(oidc, down, down_secret)["id_token"]
    tokens_for(oidc, up, up_secret, sso=True)

    response = logout(client, id_token_hint=id_token,
                      post_logout_redirect_uri="https://rp.example/bye")

    assert response.status_code == 302
    assert response.headers["Location"] == "https://rp.example/bye"
    assert [r["path"] for r in receiver.all_received()] == ["/up/logout"]
    assert silent_authorize(oidc, up)["error"] == "login_required"


@pytest.mark.parametrize("app_config", [{"IDP_BACKCHANNEL_TIMEOUT": 0.5}])
def test_a_slow_receiver_is_given_up_after_the_configured_timeout(
    client, oidc, alice, slow_receiver
):
    slow, secret = make_client(client_id="rp-slow",
                               backchannel_logout_uri=slow_receiver.url("/slow/logout"))
    id_token = tokens_for(oidc, slow, secret)["id_token"]

    started = time.monotonic()
    response = logout(client, id_token_hint=id_token,
                      post_logout_redirect_uri="https://rp.example/bye")
    elapsed = time.monotonic() - started

    assert response.status_code == 302
    # Well under the 3 s default: the configured 0.5 s is what bounds the wait.
    assert elapsed < 2.5
    assert [r["path"] for r in slow_receiver.all_received()] == ["/slow/logout"]
    assert live_sessions() == 0


def test_signing_in_as_another_user_logs_the_earlier_session_out_of_its_clients(
    client, oidc, alice, receiver
):
    first, secret = make_client(client_id="rp-one",
                                backchannel_logout_uri=receiver.url("/one/logout"))
    make_user("bob")
    alice_sid = decode(client, tokens_for(oidc, first, secret)["id_token"]).claims["sid"]

    params = oidc.callback_params(oidc.follow(
        oidc.login(oidc.authorize(first, prompt="login"), username="bob")
    ))
    assert params["code"]

    received = receiver.all_received()
    assert [r["path"] for r in received] == ["/one/logout"]
    keyset = KeySet.import_key_set(client.get("/jwks.json").get_json())
    claims = jwt.decode(received[0]["form"]["logout_token"], keyset).claims
    assert (claims["sub"], claims["sid"]) == (alice.sub, alice_sid)


def test_a_receiver_that_redirects_is_not_followed(client, oidc, alice, receiver):
    app_client, secret = make_client(
        client_id="rp-one", backchannel_logout_uri=receiver.url("/redirect?to=/elsewhere")
    )
    id_token = tokens_for(oidc, app_client, secret)["id_token"]

    response = logout(client, id_token_hint=id_token)

    assert response.status_code == 200
    assert [r["path"] for r in receiver.all_received()] == ["/redirect?to=/elsewhere"]
