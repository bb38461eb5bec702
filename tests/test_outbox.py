"""The development outbox: /dev/outbox and /dev/outbox.json exist only with IDP_DEV_OUTBOX=1,
list messages newest first with clickable links and escaped bodies, and a production
configuration refuses them; the ``idp delivery`` commands put test messages there."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from idp import create_app
from idp.config import ConfigError
from idp.delivery import send_email, send_sms
from idp.extensions import db
from idp.models import OutboxMessage
from tests.conftest import PRODUCTION_SETTINGS, assert_setting_refused, base_config

# The verification email these tests send is the MFA plugin's.
WITH_MFA = {"IDP_PLUGINS": "plugins.mfa"}
OUTBOX_ON = {"IDP_DEV_OUTBOX": True, **WITH_MFA}
PRODUCTION = PRODUCTION_SETTINGS
LINK = "http://localhost/verify-email?token=tok3n&next=%2Fmfa"


def verification_email(to="bob@example.com"):
    send_email(to, "verify_email", {"link": LINK}, kind="link")


def passcode_sms(to="(202) 555-0143"):
    send_sms(to, "passcode", {"code": "123456"}, kind="passcode")


def outbox_rows() -> list[OutboxMessage]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(OutboxMessage).order_by(OutboxMessage.id)))


# --- the pages ------------------------------------------------------------------------------


@pytest.mark.parametrize("app_config", [OUTBOX_ON])
def test_outbox_page_lists_messages_newest_first_with_clickable_links(app, client):
    verification_email("first@example.com")
    passcode_sms()
    send_email("third@example.com", "password_changed", kind="notice")

    response = client.get("/dev/outbox")

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    third, second, first = (html.index("third@example.com"), html.index("+12025550143"),
                            html.index("first@example.com"))
    assert third < second < first
    escaped_link = LINK.replace("&", "&amp;")
    assert f'<a href="{escaped_link}">{escaped_link}</a>' in html
    assert "your one-time passcode is 123456" in html


@pytest.mark.parametrize("app_config", [OUTBOX_ON])
def test_outbox_page_escapes_html_in_messages(app, client):
    send_sms("(202) 555-0143", "notice", {"text": "<script>alert(1)</script>"}, kind="notice")
    db.session.add(OutboxMessage(channel="email", recipient="x@example.com",
                                 subject="<b>bold</b> subject", kind="notice",
                                 text='<img src=x onerror="alert(2)"> see https://a.example/'
                                      '"><script>alert(3)</script>'))
    db.session.commit()

    html = client.get("/dev/outbox").get_data(as_text=True)

    assert "<script>" not in html
    assert "<img" not in html
    assert "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; subject" in html
    # The URL stops before the quote: no attribute can be injected through the link.
    assert '<a href="https://a.example/">https://a.example/</a>' in html


@pytest.mark.parametrize("app_config", [OUTBOX_ON])
def test_a_link_at_the_end_of_a_sentence_leaves_the_full_stop_out(app, client):
    db.session.add(OutboxMessage(channel="sms", recipient="+12025550143", kind="link",
                                 text="Verify at https://idp.example/v?t=abc. Thanks"))
    db.session.commit()

    html = client.get("/dev/outbox").get_data(as_text=True)

    assert '<a href="https://idp.example/v?t=abc">https://idp.example/v?t=abc</a>. Thanks' in html


@pytest.mark.parametrize("app_config", [OUTBOX_ON])
def test_outbox_page_says_so_when_empty(app, client):
    response = client.get("/dev/outbox")
    assert response.status_code == 200
    assert "No messages yet." in response.get_data(as_text=True)


@pytest.mark.parametrize("app_config", [OUTBOX_ON])
def test_outbox_json_returns_the_fields_newest_first(app, client):
    verification_email("bob@example.com")
    passcode_sms()

    response = client.get("/dev/outbox.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    sms, email = response.get_json()
    assert set(sms) == set(email) == {"id", "channel", "to", "subject", "text", "kind",
                                      "created_at"}
    assert sms["id"] > email["id"]
    assert (sms["channel"], sms["to"], sms["kind"], sms["subject"]) == (
        "sms", "+12025550143", "passcode", None)
    assert "123456" in sms["text"]
    assert (email["channel"], email["to"], email["kind"]) == (
        "email", "bob@example.com", "link")
    assert email["subject"]
    assert LINK in email["text"]
    for message in (sms, email):
        assert message["created_at"].endswith("Z")
        datetime.fromisoformat(message["created_at"].removesuffix("Z"))
    assert sms["created_at"] >= email["created_at"]


@pytest.mark.parametrize("app_config", [OUTBOX_ON])
def test_outbox_json_filters_by_recipient(app, client):
    verification_email("bob@example.com")
    verification_email("carol@example.com")
    passcode_sms("(202) 555-0143")
    passcode_sms("(202) 555-0144")
    send_email("bob@example.com", "password_changed", kind="notice")

    bob = client.get("/dev/outbox.json?to=bob@example.com").get_json()
    assert [(m["to"], m["kind"]) for m in bob] == [("bob@example.com", "notice"),
                                                   ("bob@example.com", "link")]
    by_e164 = client.get("/dev/outbox.json", query_string={"to": "+12025550143"}).get_json()
    assert [m["to"] for m in by_e164] == ["+12025550143"]
    # The usual spellings of a number, and any case of an address, find the same messages.
    by_spelling = client.get("/dev/outbox.json",
                             query_string={"to": "(202) 555-0143"}).get_json()
    assert by_spelling == by_e164
    assert client.get("/dev/outbox.json?to=BOB@example.com").get_json() == bob
    assert client.get("/dev/outbox.json?to=nobody@example.com").get_json() == []
    # The page filters the same way.
    page = client.get("/dev/outbox?to=carol@example.com").get_data(as_text=True)
    assert "carol@example.com" in page
    assert "bob@example.com" not in page


@pytest.mark.parametrize("app_config", [WITH_MFA, {"IDP_DEV_OUTBOX": False, **WITH_MFA},
                                        {"IDP_DEV_OUTBOX": "0", **WITH_MFA}])
def test_without_idp_dev_outbox_both_pages_answer_404(app, client):
    verification_email()
    assert len(outbox_rows()) == 1  # the outbox backend still keeps messages

    for path in ("/dev/outbox", "/dev/outbox.json", "/dev/outbox.json?to=bob@example.com"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "bob@example.com" not in response.get_data(as_text=True)


def test_idp_dev_outbox_from_the_environment_turns_the_pages_on(tmp_path, database_url,
                                                                monkeypatch):
    monkeypatch.setenv("IDP_DEV_OUTBOX", "1")
    app = create_app(base_config(tmp_path, **WITH_MFA))
    with app.app_context():
        verification_email()
        response = app.test_client().get("/dev/outbox.json")
        assert response.status_code == 200
        assert [m["to"] for m in response.get_json()] == ["bob@example.com"]
        db.session.remove()


# --- production refuses the outbox, bad values are named ------------------------------------


def test_production_with_the_outbox_refuses_to_start_naming_idp_dev_outbox(tmp_path):
    with pytest.raises(ConfigError) as info:
        create_app(base_config(tmp_path, **PRODUCTION, IDP_DEV_OUTBOX=True))

    message = str(info.value)
    assert "IDP_DEV_OUTBOX" in message
    assert "production" in message.lower()
    # Only the outbox is wrong with this configuration.
    assert "IDP_SECRET_KEY" not in message
    assert "IDP_ISSUER" not in message


def test_production_with_the_outbox_from_the_environment_refuses_to_start(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("IDP_ENV", "production")
    monkeypatch.setenv("IDP_DEV_OUTBOX", "1")
    config = base_config(tmp_path, **{k: v for k, v in PRODUCTION.items() if k != "IDP_ENV"})
    with pytest.raises(ConfigError, match="IDP_DEV_OUTBOX"):
        create_app(config)


def test_the_same_production_configuration_without_the_outbox_starts(tmp_path, database_url):
    app = create_app(base_config(tmp_path, **PRODUCTION))

    assert app.config["IDP_ENV"] == "production"
    assert app.config["IDP_DEV_OUTBOX"] is False
    http = app.test_client()
    assert http.get("/healthz").status_code == 200
    assert http.get("/dev/outbox").status_code == 404
    assert http.get("/dev/outbox.json").status_code == 404


@pytest.mark.parametrize("name,value", [("IDP_DEV_OUTBOX", "maybe"),
                                        ("IDP_SEND_LIMIT_PER_ACCOUNT", "abc")])
def test_a_bad_value_stops_the_start_naming_the_variable(tmp_path, monkeypatch, name, value):
    refusal = assert_setting_refused(tmp_path, monkeypatch, name, value)
    assert repr(value) in str(refusal)


# --- the delivery commands --------------------------------------------------------------------


def test_delivery_test_email_puts_one_message_in_the_outbox(app, runner):
    result = runner.invoke(args=["delivery", "test-email", "--to", "x@example.com"])

    assert result.exit_code == 0, (result.output, result.exception)
    assert "x@example.com" in result.output
    [message] = outbox_rows()
    assert (message.channel, message.recipient, message.kind) == ("email", "x@example.com",
                                                                  "notice")
    assert message.subject
    assert "test message" in message.text.lower()


def test_delivery_test_sms_puts_one_message_in_the_outbox(app, runner):
    result = runner.invoke(args=["delivery", "test-sms", "--to", "(202) 555-0143"])

    assert result.exit_code == 0, (result.output, result.exception)
    [message] = outbox_rows()
    assert (message.channel, message.recipient) == ("sms", "+12025550143")
    assert re.search("test message", message.text, re.IGNORECASE)


def test_delivery_test_sms_refuses_a_number_outside_the_us(app, runner):
    result = runner.invoke(args=["delivery", "test-sms", "--to", "+44 20 7946 0958"])

    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "--to" in result.output
    assert outbox_rows() == []


@pytest.mark.parametrize("app_config", [OUTBOX_ON])
@pytest.mark.parametrize("path", ["/dev/outbox", "/dev/outbox.json"])
def test_the_outbox_with_its_passcodes_and_links_is_never_cached(app, client, path):
    passcode_sms()
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
