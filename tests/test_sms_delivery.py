"""Text messages reach a real local server: the signed webhook and a fake with Twilio's HTTP
shape. Every provider failure is one attempt, a message offering another method, and an audit
event; nothing is sent to a number that is not a US mobile; the passcode is never logged."""

import base64
import hashlib
import hmac
import json
import logging
import time

import pytest

from idp import create_app
from idp.config import ConfigError
from idp.delivery import DeliveryError, PhoneNumberError, ThrottledError, send_sms
from idp.extensions import db
from idp.models import AuditEvent, OutboxMessage, RateCounter
from tests.conftest import base_config
from tests.http_receivers import TwilioFake, WebhookReceiver, free_port

SECRET = "whsec-0123456789abcdef-not-a-real-secret"
PASSCODE = "740193"
NUMBER = "(202) 555-0143"
E164 = "+12025550143"
MASKED = "***-***-0143"
FROM_NUMBER = "+12025550100"
TIMEOUT = 1.0  # IDP_SMS_TIMEOUT in these tests
SLOW = 6.0  # an answer this late is a timeout


def send_passcode(to=NUMBER, code=PASSCODE, **kwargs):
    send_sms(to, "passcode", {"code": code}, **kwargs)


def events(name=None) -> list[AuditEvent]:
    query = db.select(AuditEvent).order_by(AuditEvent.id)
    if name:
        query = query.where(AuditEvent.event == name)
    return list(db.session.scalars(query))


def count(model) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def signature(raw: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def delivery_failure(**kwargs) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        send_passcode(**kwargs)
    assert not isinstance(caught.value, ThrottledError)
    return caught.value


def assert_failure_reported(error: DeliveryError, backend: str) -> dict:
    """The user is told to retry or pick another method; one audit event says what failed,
    without the passcode or the full number. Returns the event's detail."""
    assert "couldn't send the text message" in error.user_message
    assert "Try again" in error.user_message
    assert "choose another method" in error.user_message
    assert PASSCODE not in error.user_message
    failed = events("delivery_failed")
    assert len(failed) == 1
    detail = failed[0].detail
    assert detail["channel"] == "sms"
    assert detail["backend"] == backend
    assert detail["kind"] == "passcode"
    assert detail["to"] == MASKED
    stored = json.dumps(detail)
    assert PASSCODE not in stored
    assert "2025550143" not in stored
    assert events("delivery_sent") == []
    return detail


@pytest.fixture
def receiver(request):
    return WebhookReceiver.started(request)


@pytest.fixture
def webhook_config(receiver):
    return {"IDP_SMS_BACKEND": "webhook", "IDP_SMS_WEBHOOK_URL": receiver.url + "/hooks/sms",
            "IDP_SMS_WEBHOOK_SECRET": SECRET, "IDP_SMS_TIMEOUT": TIMEOUT}


@pytest.fixture
def twilio(request):
    return TwilioFake.started(request)


@pytest.fixture
def twilio_config(twilio):
    return {"IDP_SMS_BACKEND": "twilio", "IDP_TWILIO_BASE_URL": twilio.url,
            "IDP_TWILIO_ACCOUNT_SID": twilio.account_sid,
            "IDP_TWILIO_AUTH_TOKEN": twilio.auth_token,
            "IDP_TWILIO_FROM_NUMBER": FROM_NUMBER, "IDP_SMS_TIMEOUT": TIMEOUT}


class TestNumbersAreCheckedBeforeAnySend:
    @pytest.fixture
    def app_config(self, webhook_config):
        return webhook_config

    @pytest.mark.parametrize("number", ["+44 20 7946 0958", "+1 416 555 0143", "800-555-0143",
                                        "900-555-0143", "311-555-0143", "202-555-014",
                                        "202-CALL-NOW", ""])
    def test_a_refused_number_reaches_neither_the_provider_nor_the_throttles(
        self, app, receiver, number
    ):
        with pytest.raises(PhoneNumberError):
            send_passcode(to=number)

        assert receiver.requests == []
        assert count(RateCounter) == 0
        assert events() == []

    def test_the_outbox_backend_stores_nothing_for_an_international_number(self, app):
        app.config["IDP_SMS_BACKEND"] = "outbox"

        with pytest.raises(PhoneNumberError, match="international numbers"):
            send_passcode(to="+33 6 12 34 56 78")

        assert count(OutboxMessage) == 0

    def test_the_outbox_backend_stores_a_us_number_in_e164(self, app):
        app.config["IDP_SMS_BACKEND"] = "outbox"

        send_passcode(to="202.555.0143")

        row = db.session.scalars(db.select(OutboxMessage)).one()
        assert (row.channel, row.recipient, row.kind) == ("sms", E164, "passcode")
        assert PASSCODE in row.text


class TestWebhookBackend:
    @pytest.fixture
    def app_config(self, webhook_config):
        return {**webhook_config, "IDP_BRAND_NAME": "USPS.com account"}

    def test_a_passcode_is_one_signed_json_post_to_the_configured_url(self, app, receiver):
        send_passcode(user_id=7)

        [request] = receiver.wait_for_requests(1)
        assert request.method == "POST"
        assert request.path == "/hooks/sms"
        assert request.headers["Content-Type"] == "application/json"
        message = json.loads(request.body)
        assert set(message) == {"to", "body"}
        assert message["to"] == E164
        assert message["body"] == ("USPS.com account: your one-time passcode is 740193. It "
                                   "expires in 5 minutes. Don't share it.")
        assert count(OutboxMessage) == 0
        [sent] = events("delivery_sent")
        assert sent.user_id == 7
        assert sent.detail == {"channel": "sms", "kind": "passcode", "to": MASKED,
                               "backend": "webhook"}

    def test_the_signature_is_hmac_sha256_of_the_raw_body_with_the_secret(self, app, receiver):
        send_passcode()

        [request] = receiver.wait_for_requests(1)
        header = request.headers["X-IDP-Signature"]
        assert hmac.compare_digest(header, signature(request.body))
        assert not hmac.compare_digest(header, signature(request.body, "another secret"))
        assert not hmac.compare_digest(header, signature(request.body.replace(b"7", b"8")))

    def test_a_notice_is_sent_with_its_text_and_the_support_contact(self, app, receiver):
        send_sms("+1 202 555 0143", "notice", {"text": "Your password was changed."},
                 kind="notice")

        [request] = receiver.wait_for_requests(1)
        body = request.json()["body"]
        assert body.startswith("USPS.com account: Your password was changed.")
        assert "the help desk" in body

    def test_a_brand_with_an_ampersand_is_not_html_escaped_in_the_text(self, app, receiver):
        app.config["IDP_BRAND_NAME"] = "Smith & Sons"

        send_passcode()

        assert receiver.wait_for_requests(1)[0].json()["body"].startswith("Smith & Sons:")

    @pytest.mark.parametrize("status", [500, 503, 429, 400, 404])
    def test_an_error_status_is_one_attempt_and_a_reported_failure(self, app, receiver, status):
        receiver.respond(status, headers={"Retry-After": "1"})

        error = delivery_failure()

        assert len(receiver.wait_for_requests(1)) == 1
        detail = assert_failure_reported(error, "webhook")
        assert f"HTTP {status}" in detail["error"]

    def test_a_slow_receiver_times_out_after_the_configured_seconds(self, app, receiver):
        receiver.respond(200, delay=SLOW)

        started = time.monotonic()
        error = delivery_failure()
        elapsed = time.monotonic() - started

        assert TIMEOUT * 0.8 <= elapsed < SLOW - 1
        assert len(receiver.wait_for_requests(1)) == 1
        assert "timed out" in assert_failure_reported(error, "webhook")["error"]

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_a_redirect_is_not_followed(self, app, receiver, request, status):
        elsewhere = WebhookReceiver.started(request)
        receiver.respond(status, headers={"Location": elsewhere.url + "/stolen"})

        error = delivery_failure()

        assert len(receiver.wait_for_requests(1)) == 1
        assert elsewhere.requests == []
        assert f"HTTP {status}" in assert_failure_reported(error, "webhook")["error"]

    def test_a_refused_connection_is_a_reported_failure(self, app):
        app.config["IDP_SMS_WEBHOOK_URL"] = f"http://127.0.0.1:{free_port()}/hooks/sms"

        error = delivery_failure()

        assert "unreachable: ConnectionRefusedError" in assert_failure_reported(
            error, "webhook")["error"]

    def test_a_connection_closed_without_an_answer_is_one_attempt_and_a_failure(
        self, app, receiver
    ):
        receiver.respond(drop=True)

        error = delivery_failure()

        assert len(receiver.wait_for_requests(1)) == 1
        assert_failure_reported(error, "webhook")

    def test_an_answer_that_is_not_http_is_a_reported_failure(self, app, receiver):
        receiver.respond(raw=b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

        error = delivery_failure()

        assert len(receiver.wait_for_requests(1)) == 1
        assert_failure_reported(error, "webhook")

    def test_after_a_failure_the_user_can_send_again_once_the_receiver_recovers(
        self, app, receiver
    ):
        app.config["IDP_PASSCODE_RESEND_SECONDS"] = 0
        receiver.respond(503)
        delivery_failure()
        receiver.respond(200)

        send_passcode(code="111222")

        second = receiver.wait_for_requests(2)[1]
        assert "111222" in second.json()["body"]
        assert len(events("delivery_sent")) == 1


class TestTwilioBackend:
    @pytest.fixture
    def app_config(self, twilio_config):
        return twilio_config

    def test_a_passcode_is_sent_from_the_configured_number(self, app, twilio):
        send_passcode(user_id=3)

        [request] = twilio.wait_for_requests(1)
        assert request.method == "POST"
        assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        credentials = f"{twilio.account_sid}:{twilio.auth_token}".encode()
        assert request.headers["Authorization"] == "Basic " + base64.b64encode(
            credentials).decode()
        form = request.form()
        assert set(form) == {"To", "Body", "From"}
        assert form["To"] == E164
        assert form["From"] == FROM_NUMBER
        assert PASSCODE in form["Body"]
        [message] = twilio.messages
        assert message["status"] == "queued" and message["sid"].startswith("SM")
        [sent] = events("delivery_sent")
        assert sent.detail["backend"] == "twilio" and sent.detail["to"] == MASKED

    def test_a_messaging_service_is_used_instead_of_a_from_number(self, app, twilio):
        app.config.update(IDP_TWILIO_FROM_NUMBER="",
                          IDP_TWILIO_MESSAGING_SERVICE_SID="MG" + "0" * 32)

        send_passcode()

        form = twilio.wait_for_requests(1)[0].form()
        assert set(form) == {"To", "Body", "MessagingServiceSid"}
        assert form["MessagingServiceSid"] == "MG" + "0" * 32
        assert twilio.messages[0]["status"] == "accepted"
        assert len(events("delivery_sent")) == 1

    def test_a_messaging_service_wins_over_a_from_number_when_both_are_set(self, app, twilio):
        app.config["IDP_TWILIO_MESSAGING_SERVICE_SID"] = "MG" + "1" * 32

        send_passcode()

        form = twilio.wait_for_requests(1)[0].form()
        assert "From" not in form
        assert form["MessagingServiceSid"] == "MG" + "1" * 32

    @pytest.mark.parametrize(("fail_with", "status", "code"), [
        ("invalid_to", 400, 21211),
        ("too_many_requests", 429, 20429),
        ("server_error", 500, 20500),
        ("unavailable", 503, 20503),
    ])
    def test_a_twilio_error_is_one_attempt_and_a_reported_failure(
        self, app, twilio, fail_with, status, code
    ):
        twilio.fail_with = fail_with

        error = delivery_failure()

        assert len(twilio.wait_for_requests(1)) == 1
        assert twilio.messages == []
        detail = assert_failure_reported(error, "twilio")
        assert f"HTTP {status} (code {code})" in detail["error"]

    def test_wrong_credentials_are_refused_with_401_and_reported(self, app, twilio):
        app.config["IDP_TWILIO_AUTH_TOKEN"] = "not-the-token"

        error = delivery_failure()

        assert len(twilio.wait_for_requests(1)) == 1
        assert twilio.messages == []
        assert "HTTP 401 (code 20003)" in assert_failure_reported(error, "twilio")["error"]

    def test_a_slow_twilio_times_out_after_the_configured_seconds(self, app, twilio):
        twilio.delay = SLOW

        started = time.monotonic()
        error = delivery_failure()

        assert time.monotonic() - started < SLOW - 1
        assert len(twilio.wait_for_requests(1)) == 1
        assert "timed out" in assert_failure_reported(error, "twilio")["error"]

    def test_a_refused_connection_is_a_reported_failure(self, app):
        app.config["IDP_TWILIO_BASE_URL"] = f"http://127.0.0.1:{free_port()}"

        error = delivery_failure()

        assert "unreachable" in assert_failure_reported(error, "twilio")["error"]

    def test_a_message_created_with_status_failed_is_a_failure(self, app, twilio):
        twilio.fail_with = "status_failed"

        error = delivery_failure()

        assert len(twilio.wait_for_requests(1)) == 1
        assert [m["status"] for m in twilio.messages] == ["failed"]
        assert "failed" in assert_failure_reported(error, "twilio")["error"]


class TestConfiguration:
    @pytest.mark.parametrize(("settings", "named"), [
        ({"IDP_SMS_BACKEND": "webhook", "IDP_SMS_WEBHOOK_SECRET": SECRET},
         "IDP_SMS_WEBHOOK_URL"),
        ({"IDP_SMS_BACKEND": "webhook", "IDP_SMS_WEBHOOK_URL": "https://sms.example/hook"},
         "IDP_SMS_WEBHOOK_SECRET"),
        ({"IDP_SMS_BACKEND": "twilio", "IDP_TWILIO_AUTH_TOKEN": "t",
          "IDP_TWILIO_FROM_NUMBER": FROM_NUMBER}, "IDP_TWILIO_ACCOUNT_SID"),
        ({"IDP_SMS_BACKEND": "twilio", "IDP_TWILIO_ACCOUNT_SID": "AC1",
          "IDP_TWILIO_FROM_NUMBER": FROM_NUMBER}, "IDP_TWILIO_AUTH_TOKEN"),
        ({"IDP_SMS_BACKEND": "twilio", "IDP_TWILIO_ACCOUNT_SID": "AC1",
          "IDP_TWILIO_AUTH_TOKEN": "t"}, "IDP_TWILIO_FROM_NUMBER"),
        ({"IDP_SMS_BACKEND": "carrier-pigeon"}, "IDP_SMS_BACKEND"),
        ({"IDP_SMS_BACKEND": "webhook", "IDP_SMS_WEBHOOK_URL": "file:///etc/passwd",
          "IDP_SMS_WEBHOOK_SECRET": SECRET}, "IDP_SMS_WEBHOOK_URL must start with https://"),
    ])
    def test_incomplete_sms_settings_refuse_to_start_naming_the_variable(
        self, tmp_path, settings, named
    ):
        with pytest.raises(ConfigError, match=named):
            create_app(base_config(tmp_path, **settings))

    def test_an_unknown_backend_from_the_environment_is_refused_with_its_value(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.setenv("IDP_SMS_BACKEND", "carrier-pigeon")

        with pytest.raises(ConfigError) as caught:
            create_app(base_config(tmp_path))

        assert "IDP_SMS_BACKEND must be one of outbox, webhook, twilio" in str(caught.value)
        assert "carrier-pigeon" in str(caught.value)

    def test_complete_webhook_and_twilio_settings_start(self, tmp_path):
        create_app(base_config(tmp_path, IDP_SMS_BACKEND="webhook",
                               IDP_SMS_WEBHOOK_URL="https://sms.example/hook",
                               IDP_SMS_WEBHOOK_SECRET=SECRET))
        create_app(base_config(tmp_path, IDP_SMS_BACKEND="twilio",
                               IDP_TWILIO_ACCOUNT_SID="AC1", IDP_TWILIO_AUTH_TOKEN="t",
                               IDP_TWILIO_MESSAGING_SERVICE_SID="MG1"))


class TestPasscodesStaySecret:
    @pytest.fixture
    def app_config(self, webhook_config):
        return {**webhook_config, "IDP_PASSCODE_RESEND_SECONDS": 0}

    def test_the_passcode_is_in_no_log_record_and_no_audit_event(
        self, app, receiver, request, caplog
    ):
        caplog.set_level(logging.DEBUG)
        twilio = TwilioFake.started(request, fail_with="status_failed")

        send_passcode()  # sent by the webhook
        receiver.respond(500)
        delivery_failure()
        receiver.respond(200, delay=SLOW)
        delivery_failure()
        app.config.update(IDP_SMS_BACKEND="twilio", IDP_TWILIO_BASE_URL=twilio.url,
                          IDP_TWILIO_ACCOUNT_SID=twilio.account_sid,
                          IDP_TWILIO_AUTH_TOKEN=twilio.auth_token,
                          IDP_TWILIO_FROM_NUMBER=FROM_NUMBER)
        delivery_failure()  # Twilio answers the message back, with its body, as failed
        app.config["IDP_SMS_BACKEND"] = "outbox"
        send_passcode()

        # The logs were captured, and the messages did carry the passcode.
        assert "delivery_sent" in caplog.text and "delivery_failed" in caplog.text
        assert PASSCODE in receiver.requests[0].json()["body"]
        assert PASSCODE in twilio.messages[0]["body"]
        assert PASSCODE not in caplog.text
        for record in caplog.records:
            assert PASSCODE not in repr(record.args)
        assert len(events()) == 5
        for event in events():
            assert PASSCODE not in json.dumps(event.detail)


class TestCommandLine:
    @pytest.fixture
    def app_config(self, webhook_config):
        return webhook_config

    def test_test_sms_sends_through_the_webhook(self, runner, receiver):
        result = runner.invoke(args=["delivery", "test-sms", "--to", "(202) 555-0143"])

        assert result.exit_code == 0, result.output
        assert "Sent a test text message with webhook" in result.output
        [request] = receiver.wait_for_requests(1)
        assert request.json()["to"] == E164
        assert "This is a test message." in request.json()["body"]
        assert request.headers["X-IDP-Signature"] == signature(request.body)

    def test_test_sms_refuses_an_international_number_and_sends_nothing(
        self, runner, receiver
    ):
        result = runner.invoke(args=["delivery", "test-sms", "--to", "+44 20 7946 0958"])

        assert result.exit_code == 2
        assert "--to" in result.output
        assert "Only US phone numbers are accepted" in result.output
        assert receiver.requests == []

    def test_test_sms_reports_a_provider_failure(self, runner, receiver):
        receiver.respond(503)

        result = runner.invoke(args=["delivery", "test-sms", "--to", "202-555-0143"])

        assert result.exit_code == 1
        assert "Not sent" in result.output and "HTTP 503" in result.output
        assert len(receiver.wait_for_requests(1)) == 1
