"""Signed out everywhere: a password change, an MFA reset by the help desk and a disabled
account end every SSO session of the user with a back-channel logout to every client of each
session, and revoke every token issued to the user (refresh, userinfo, introspection). The
back-channel logouts go out concurrently, within ``IDP_BACKCHANNEL_TOTAL_TIMEOUT``.

The relying parties' back-channel endpoints are real HTTP servers on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.extensions import db
from idp.models import AuditEvent, SsoSession, User
from tests.conftest import ISSUER, PASSWORD, OidcActions, make_client
from tests.http_receivers import WebhookReceiver, free_port
from tests.mfa_journeys import enrolled, pass_challenge  # noqa: F401 - fixture
from tests.mfa_support import (  # noqa: F401 - fixtures
    browser,
    cohort_rp,
    mail,
    mfa,
    mfa_settings,
    new_user,
    sms,
)
from tests.token_helpers import OFFLINE_SCOPE, introspect, is_active, refresh, userinfo

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
NEW_PASSWORD = "a brand new passphrase"
HANG = 30  # seconds a hanging receiver holds its answer (cut short when the test ends)


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture
def receiver(request):
    """The back-channel logout endpoints of the relying parties (one path per client)."""
    return WebhookReceiver.started(request, body=b"")


def backchannel_client(client_id: str, receiver: WebhookReceiver, **kwargs):
    return make_client(client_id=client_id,
                       backchannel_logout_uri=f"{receiver.url}/{client_id}/logout", **kwargs)


def tokens(actions: OidcActions, rp, secret, sso: bool = False) -> dict:
    """Sign in to ``rp`` (with the password, or by single sign-on) asking for a refresh
    token, and redeem the code."""
    if sso:
        params = actions.callback_params(actions.follow(actions.authorize(rp,
                                                                          scope=OFFLINE_SCOPE)))
    else:
        params = actions.sign_in(rp, scope=OFFLINE_SCOPE)
    response = actions.token(rp, secret, params["code"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["refresh_token"]
    return body


def keyset(http) -> KeySet:
    return KeySet.import_key_set(http.get("/jwks.json").get_json())


def sid_of(http, id_token: str) -> str:
    return jwt.decode(id_token, keyset(http)).claims["sid"]


def logout_tokens(http, receiver: WebhookReceiver) -> dict[tuple[str, str], dict]:
    """The logout tokens that arrived, checked as a relying party checks them (signature
    against the JWKS, ``typ``, ``iss``, ``aud``, times, the event, no nonce), by
    ``(client_id, sid)``; each client path and sid pair arrives once."""
    keys = keyset(http)
    found: dict[tuple[str, str], dict] = {}
    for request in receiver.requests:
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        token = jwt.decode(request.form()["logout_token"], keys)
        assert token.header["typ"] == "logout+jwt"
        claims = token.claims
        client_id = request.path.split("/")[1]
        assert claims["iss"] == ISSUER
        assert claims["aud"] == client_id
        assert claims["events"] == {BACKCHANNEL_EVENT: {}}
        assert "nonce" not in claims
        assert claims["jti"]
        now = time.time()
        assert claims["iat"] <= now + 5 and now < claims["exp"] <= now + 600
        key = (client_id, claims["sid"])
        assert key not in found, f"two logout tokens for {key}"
        found[key] = claims
    return found


def assert_signed_out_everywhere(http, receiver, expected: dict[tuple[str, str], str]):
    """Every ``(client_id, sid)`` received exactly one valid logout token for ``sub``."""
    received = logout_tokens(http, receiver)
    assert set(received) == set(expected)
    for key, sub in expected.items():
        assert received[key]["sub"] == sub


def assert_tokens_refused(http, rp, secret, issued: dict) -> None:
    """The refresh token is refused at the token endpoint, the access token at userinfo,
    and both are inactive at introspection."""
    refused = refresh(http, rp, secret, issued["refresh_token"])
    assert refused.status_code == 400, refused.get_json().get("error")
    assert refused.get_json()["error"] == "invalid_grant"
    assert userinfo(http, issued["access_token"]).status_code == 401
    assert not is_active(http, rp, secret, issued["access_token"])
    assert not is_active(http, rp, secret, issued["refresh_token"])


def live_sessions(user_id: int) -> list[SsoSession]:
    db.session.expire_all()
    return [row for row in db.session.scalars(db.select(SsoSession).filter_by(user_id=user_id))
            if row.is_live]


def audit_details(event: str, user_id: int | None = None) -> list[dict]:
    db.session.expire_all()
    query = db.select(AuditEvent).filter_by(event=event).order_by(AuditEvent.id)
    if user_id is not None:
        query = query.filter_by(user_id=user_id)
    return [row.detail for row in db.session.scalars(query)]


def invoke(runner, *args, input=None):
    result = runner.invoke(args=list(args), input=input)
    assert result.exit_code == 0, result.output
    return result


def set_password(runner, username="alice"):
    return json.loads(invoke(runner, "users", "set-password", username, "--password-stdin",
                             input=NEW_PASSWORD + "\n").output)


@pytest.fixture
def signed_in_twice(app, alice, receiver):
    """alice signed in on two browsers: the first to rp-one and (by SSO) rp-two, the second
    to rp-three and rp-one. rp-idle has a back-channel URI but was never signed in to.
    Returns ``(clients, issued, expected)``: the clients with their secrets, the tokens per
    (browser, client), and the logout tokens expected, ``(client_id, sid) -> sub``."""
    clients = {name: backchannel_client(name, receiver)
               for name in ("rp-one", "rp-two", "rp-three", "rp-idle")}
    first, second = OidcActions(app.test_client()), OidcActions(app.test_client())
    issued = {
        ("first", "rp-one"): tokens(first, *clients["rp-one"]),
        ("first", "rp-two"): tokens(first, *clients["rp-two"], sso=True),
        ("second", "rp-three"): tokens(second, *clients["rp-three"]),
        ("second", "rp-one"): tokens(second, *clients["rp-one"], sso=True),
    }
    sids = {name: sid_of(first.http, issued[(name, "rp-one")]["id_token"])
            for name in ("first", "second")}
    assert sids["first"] != sids["second"]
    expected = {(client_id, sids[browser_name]): alice.sub for browser_name, client_id in issued}
    return clients, issued, expected


# --- a password change ------------------------------------------------------------------


def test_after_set_password_the_old_refresh_token_is_refused_with_invalid_grant(
        runner, client, oidc, alice, receiver):
    rp, secret = backchannel_client("rp-one", receiver)
    issued = tokens(oidc, rp, secret)
    rotated = refresh(client, rp, secret, issued["refresh_token"])
    assert rotated.status_code == 200, rotated.get_json()
    latest = rotated.get_json()

    set_password(runner)

    answer = refresh(client, rp, secret, latest["refresh_token"])
    assert answer.status_code == 400, answer.get_json().get("error")
    assert answer.get_json()["error"] == "invalid_grant"
    assert "access_token" not in answer.get_json()


def test_after_set_password_the_access_token_fails_at_userinfo_and_introspection(
        runner, client, oidc, alice, receiver):
    rp, secret = backchannel_client("rp-one", receiver)
    issued = tokens(oidc, rp, secret)
    assert userinfo(client, issued["access_token"]).status_code == 200

    set_password(runner)

    refused = userinfo(client, issued["access_token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert introspect(client, rp, secret, issued["access_token"]).get_json() == {
        "active": False}


def test_set_password_sends_a_logout_token_to_every_client_of_every_ended_session(
        runner, client, alice, receiver, signed_in_twice):
    clients, issued, expected = signed_in_twice

    out = set_password(runner)

    assert out["sessions_ended"] == 2
    assert live_sessions(alice.id) == []
    assert_signed_out_everywhere(client, receiver, expected)
    for (_browser, client_id), body in issued.items():
        assert_tokens_refused(client, *clients[client_id], body)
    revoked = audit_details("sessions_and_tokens_revoked", alice.id)
    assert revoked == [{"reason": "password_changed", "source": "cli", "sessions_ended": 2,
                        "tokens_revoked": 4, "codes_voided": 0}]
    sent = audit_details("backchannel_logout", alice.id)
    assert sorted((d["sid"], d["outcome"], d["status"]) for d in sent) == sorted(
        (sid, "delivered", 200) for _client_id, sid in expected)
    assert [d["reason"] for d in audit_details("session_ended", alice.id)] == [
        "password_changed", "password_changed"]


def test_after_set_password_only_the_new_password_signs_in_and_its_tokens_work(
        runner, app, alice, receiver):
    rp, secret = backchannel_client("rp-one", receiver)
    old = tokens(OidcActions(app.test_client()), rp, secret)

    set_password(runner)

    other = OidcActions(app.test_client())
    assert other.login(other.authorize(rp), password=PASSWORD).status_code == 400
    fresh = OidcActions(app.test_client())
    params = fresh.sign_in(rp, password=NEW_PASSWORD, scope=OFFLINE_SCOPE)
    new = fresh.token(rp, secret, params["code"]).get_json()
    assert userinfo(fresh.http, new["access_token"]).status_code == 200
    assert refresh(fresh.http, rp, secret, new["refresh_token"]).status_code == 200
    assert userinfo(fresh.http, old["access_token"]).status_code == 401


def test_a_code_issued_before_set_password_can_not_be_redeemed_after_it(
        runner, oidc, alice, receiver):
    rp, secret = backchannel_client("rp-one", receiver)
    params = oidc.sign_in(rp, scope=OFFLINE_SCOPE)

    set_password(runner)

    answer = oidc.token(rp, secret, params["code"])
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_grant"


def test_the_idp_command_sends_the_back_channel_logouts_before_it_exits(
        tmp_path, app, database_url, client, oidc, alice, receiver):
    rp, secret = backchannel_client("rp-one", receiver)
    issued = tokens(oidc, rp, secret)
    sid = sid_of(client, issued["id_token"])
    db.session.commit()
    db.session.remove()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IDP_")},
        "IDP_DATABASE_URL": database_url,
        "IDP_INSTANCE_PATH": app.instance_path,
        "IDP_SECRET_KEY": app.config["SECRET_KEY"],
        "IDP_ISSUER": ISSUER,
        "IDP_PLUGINS": "",
    }
    env.pop("FLASK_APP", None)
    idp = shutil.which("idp", path=str(Path(sys.executable).parent)) or "idp"

    result = subprocess.run([idp, "users", "set-password", "alice", "--password-stdin"],
                            input=NEW_PASSWORD + "\n", env=env, capture_output=True,
                            text=True, timeout=120, check=False)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sessions_ended"] == 1
    assert_signed_out_everywhere(client, receiver, {("rp-one", sid): alice.sub})
    assert_tokens_refused(client, rp, secret, issued)


# --- a disabled account -----------------------------------------------------------------


def test_disabling_a_user_revokes_their_tokens_and_logs_every_session_out_of_its_clients(
        runner, client, alice, receiver, signed_in_twice):
    clients, issued, expected = signed_in_twice

    out = json.loads(invoke(runner, "users", "disable", "alice").output)

    assert out == {"username": "alice", "disabled": True, "sessions_ended": 2,
                   "tokens_revoked": 4}
    assert live_sessions(alice.id) == []
    assert_signed_out_everywhere(client, receiver, expected)
    for (_browser, client_id), body in issued.items():
        assert_tokens_refused(client, *clients[client_id], body)
    assert audit_details("user_disabled", alice.id) == [{"source": "cli"}]
    assert audit_details("sessions_and_tokens_revoked", alice.id)[-1]["reason"] == (
        "user_disabled")


def test_a_disabled_user_can_not_sign_in_and_enabling_does_not_bring_back_old_tokens(
        runner, app, alice, receiver):
    rp, secret = backchannel_client("rp-one", receiver)
    old = tokens(OidcActions(app.test_client()), rp, secret)
    invoke(runner, "users", "disable", "alice")

    other = OidcActions(app.test_client())
    assert other.login(other.authorize(rp)).status_code == 400

    out = json.loads(invoke(runner, "users", "enable", "alice").output)
    assert out == {"username": "alice", "disabled": False}
    assert audit_details("user_enabled", alice.id) == [{"source": "cli"}]
    db.session.expire_all()
    assert db.session.get(User, alice.id).disabled is False
    assert_tokens_refused(other.http, rp, secret, old)
    assert tokens(OidcActions(app.test_client()), rp, secret)["access_token"]


def test_a_live_session_of_an_account_disabled_in_the_database_no_longer_signs_in(
        client, oidc, alice, receiver):
    rp, secret = backchannel_client("rp-one", receiver)
    tokens(oidc, rp, secret)
    assert "code" in oidc.callback_params(oidc.authorize(rp, prompt="none"))
    alice.disabled = True
    db.session.commit()

    answer = oidc.callback_params(oidc.authorize(rp, prompt="none"))

    assert answer.get("error") == "login_required"
    assert "code" not in answer


@pytest.mark.parametrize("command", [["users", "disable", "ghost"],
                                     ["users", "enable", "ghost"]])
def test_disable_and_enable_of_an_unknown_user_fail_cleanly(runner, app, command):
    result = runner.invoke(args=command)
    assert result.exit_code != 0
    assert "No user named 'ghost'" in result.output
    assert "Traceback" not in result.output


# --- bounded, concurrent back-channel logouts -------------------------------------------


@pytest.mark.parametrize("app_config", [{"IDP_BACKCHANNEL_TOTAL_TIMEOUT": 1.0,
                                         "IDP_BACKCHANNEL_TIMEOUT": 10.0}])
def test_logout_to_three_clients_of_which_one_hangs_finishes_within_the_total_bound(
        request, client, oidc, alice, receiver):
    hanging = WebhookReceiver.started(request, body=b"", delay=HANG)
    # The hanging one first: one after the other, the others would wait behind it.
    slow, slow_secret = make_client(client_id="rp-hangs",
                                    backchannel_logout_uri=f"{hanging.url}/rp-hangs/logout")
    one, one_secret = backchannel_client("rp-one", receiver)
    two, two_secret = backchannel_client("rp-two", receiver)
    id_token = tokens(oidc, slow, slow_secret)["id_token"]
    tokens(oidc, one, one_secret, sso=True)
    tokens(oidc, two, two_secret, sso=True)
    sid = sid_of(client, id_token)

    started = time.monotonic()
    response = client.get("/logout", query_string={
        "id_token_hint": id_token, "post_logout_redirect_uri": "https://rp.example/bye"})
    elapsed = time.monotonic() - started

    assert response.status_code == 302
    assert response.headers["Location"] == "https://rp.example/bye"
    assert elapsed < 3.0, elapsed  # the 1 s total bound, not the 10 s per receiver
    assert_signed_out_everywhere(client, receiver, {("rp-one", sid): alice.sub,
                                                    ("rp-two", sid): alice.sub})
    assert [r.path for r in hanging.requests] == ["/rp-hangs/logout"]
    outcomes = {c: (d["outcome"], d["status"]) for d, c in _backchannel_audit(alice.id)}
    assert outcomes == {"rp-hangs": ("timeout", None), "rp-one": ("delivered", 200),
                        "rp-two": ("delivered", 200)}


def _backchannel_audit(user_id: int) -> list[tuple[dict, str]]:
    db.session.expire_all()
    rows = db.session.scalars(db.select(AuditEvent).filter_by(event="backchannel_logout",
                                                              user_id=user_id))
    return [(row.detail, row.client_id) for row in rows]


@pytest.mark.parametrize("app_config", [{"IDP_BACKCHANNEL_TOTAL_TIMEOUT": 1.0,
                                         "IDP_BACKCHANNEL_TIMEOUT": 10.0}])
def test_set_password_with_a_hanging_and_a_refusing_client_still_succeeds_within_the_bound(
        request, runner, client, oidc, alice, receiver):
    hanging = WebhookReceiver.started(request, body=b"", delay=HANG)
    refusing = WebhookReceiver.started(request, status=500, body=b"")
    rps = [
        make_client(client_id="rp-hangs",
                    backchannel_logout_uri=f"{hanging.url}/rp-hangs/logout"),
        make_client(client_id="rp-down",
                    backchannel_logout_uri=f"http://127.0.0.1:{free_port()}/logout"),
        make_client(client_id="rp-500", backchannel_logout_uri=f"{refusing.url}/rp-500/logout"),
        backchannel_client("rp-one", receiver),
    ]
    sid = sid_of(client, tokens(oidc, *rps[0])["id_token"])
    for rp in rps[1:]:
        tokens(oidc, *rp, sso=True)

    started = time.monotonic()
    out = set_password(runner)
    elapsed = time.monotonic() - started

    assert out["sessions_ended"] == 1
    assert elapsed < 3.0, elapsed
    assert_signed_out_everywhere(client, receiver, {("rp-one", sid): alice.sub})
    assert len(refusing.requests) == 1 and len(hanging.requests) == 1
    outcomes = {c: (d["outcome"], d["status"]) for d, c in _backchannel_audit(alice.id)}
    assert outcomes == {"rp-hangs": ("timeout", None), "rp-down": ("failed", None),
                        "rp-500": ("refused", 500), "rp-one": ("delivered", 200)}


# --- an MFA reset by the help desk ------------------------------------------------------


class TestHelpDeskMfaReset:
    """With the MFA plugin: alice enrolled by SMS in a browser of her own (a session with
    the ``cns`` client) and signed in again on another browser (``mfa``) to Informed
    Delivery, asking for a refresh token."""

    @pytest.fixture
    def app_config(self, mfa_settings):  # noqa: F811 - the MFA plugin on for these tests
        return mfa_settings

    def test_mfa_reset_revokes_the_tokens_and_logs_every_session_out_of_its_clients(
            self, runner, mfa, enrolled, cohort_rp, receiver):  # noqa: F811
        cns = cohort_rp[0]
        cns.backchannel_logout_uri = f"{receiver.url}/cns/logout"
        db.session.commit()
        informed, secret = backchannel_client("informed", receiver)
        page = mfa.start(informed, scope=OFFLINE_SCOPE)
        params = mfa.finish(pass_challenge(mfa, page, remember=False))
        response = mfa.token(informed, secret, params["code"])
        assert response.status_code == 200, response.get_json()
        issued = response.get_json()
        sessions = {row.sid for row in live_sessions(enrolled.user.id)}
        mfa_sid = sid_of(mfa.http, issued["id_token"])
        assert len(sessions) == 2 and mfa_sid in sessions
        enrollment_sid = (sessions - {mfa_sid}).pop()

        result = invoke(runner, "mfa", "reset", "alice", "--yes")

        sub = enrolled.user.sub
        assert_signed_out_everywhere(mfa.http, receiver, {("cns", enrollment_sid): sub,
                                                          ("informed", mfa_sid): sub})
        assert_tokens_refused(mfa.http, informed, secret, issued)
        assert live_sessions(enrolled.user.id) == []
        assert "Sessions ended: 2, tokens revoked: 1." in result.output
        revoked = audit_details("sessions_and_tokens_revoked", enrolled.user.id)
        assert [(d["reason"], d["source"]) for d in revoked] == [("mfa_reset", "cli")]
