"""Requests the IdP makes to URIs clients registered (back-channel logout, ``jwks_uri``) go,
in production, only to addresses it may reach, checked on the address each connection uses:
a name that resolves to loopback today is refused even if it was public at registration."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from idp import outbound
from tests.http_receivers import WebhookReceiver

PRODUCTION = {"IDP_ENV": "production"}


@pytest.fixture
def receiver(request) -> WebhookReceiver:
    return WebhookReceiver.started(request)


def post(opener, url: str, timeout: float = 5.0) -> int:
    request = urllib.request.Request(url, data=b"logout_token=x", method="POST")
    with opener.open(request, timeout=timeout) as response:
        return response.status


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_in_production_nothing_is_sent_to_a_loopback_target(receiver, host):
    opener = outbound.opener(PRODUCTION, outbound.NoRedirect)
    with pytest.raises(urllib.error.URLError) as refused:
        post(opener, f"http://{host}:{receiver.port}/backchannel-logout")
    assert isinstance(refused.value.reason, outbound.TargetRefused)
    assert "loopback" in str(refused.value.reason)
    assert receiver.requests == []


def test_the_operator_may_allow_private_network_targets(receiver):
    opener = outbound.opener({**PRODUCTION, "IDP_ALLOW_PRIVATE_NETWORK_TARGETS": True})
    assert post(opener, f"http://localhost:{receiver.port}/backchannel-logout") == 200
    assert [r.path for r in receiver.requests] == ["/backchannel-logout"]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                 "http://[fd00:ec2::254]/latest/meta-data/",
                                 "http://[fe80::1]/x", "http://[::ffff:169.254.169.254]/"])
def test_metadata_and_link_local_addresses_are_refused_even_where_private_ones_are_allowed(
        url):
    opener = outbound.opener({**PRODUCTION, "IDP_ALLOW_PRIVATE_NETWORK_TARGETS": True})
    with pytest.raises(urllib.error.URLError) as refused:
        post(opener, url, timeout=1.0)
    assert isinstance(refused.value.reason, outbound.TargetRefused)


def test_the_opener_keeps_its_policy_in_threads_without_an_application(receiver):
    opener = outbound.opener(PRODUCTION)
    outcome = []

    def send():
        try:
            post(opener, f"{receiver.url}/backchannel-logout")
            outcome.append("sent")
        except urllib.error.URLError as exc:
            outcome.append(type(exc.reason).__name__)

    thread = threading.Thread(target=send)
    thread.start()
    thread.join(10)
    assert outcome == ["TargetRefused"]
    assert receiver.requests == []


def test_a_redirect_is_the_answer_and_is_not_followed(request, receiver):
    elsewhere = WebhookReceiver.started(request)
    receiver.respond(status=307, body=b"", headers={"Location": elsewhere.url + "/x"})
    opener = outbound.opener({"IDP_ENV": "development"}, outbound.NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        post(opener, receiver.url + "/backchannel-logout")
    assert answer.value.code == 307
    assert elsewhere.requests == []


@pytest.mark.parametrize("allowed", [False, True])
def test_in_production_back_channel_logout_is_checked_at_send_time(
        production_app, receiver, allowed):
    """A client whose logout URI points at a loopback address (registered when it was
    allowed, or resolving there since) gets no request, unless the operator allows
    private networks."""
    from idp.extensions import db
    from idp.models import AuditEvent
    from idp.oauth.logout import send_logouts
    from tests.conftest import make_client, make_user

    production_app(IDP_ALLOW_PRIVATE_NETWORK_TARGETS=allowed)
    user = make_user("alice")
    client, _ = make_client(client_id="rp", backchannel_logout_uri=receiver.url + "/bc")
    send_logouts([("sid-1", user.id, [client.client_id])])
    outcome = db.session.scalar(db.select(AuditEvent).filter_by(
        event="backchannel_logout")).detail["outcome"]
    assert outcome == ("delivered" if allowed else "failed")
    assert len(receiver.requests) == (1 if allowed else 0)
