"""Email delivery through a real SMTP server on loopback: what arrives, every template, TLS and
login, each failure mode, and that no passcode or link token leaks into logs or the audit."""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import time
from html import unescape
from pathlib import Path

import pytest

from idp.delivery import DeliveryError, mail, send_email
from idp.extensions import db
from idp.models import AuditEvent
from tests.conftest import make_client
from tests.smtp_server import closed_port, make_tls_files

ROOT = Path(__file__).resolve().parent.parent
# The core's emails, and the MFA plugin's (which this module's IdP runs with).
TEMPLATES_DIRS = (ROOT / "templates" / "email", ROOT / "plugins" / "mfa" / "templates" / "email")
TO = "bob@mail.example"
SUPPORT = "the Example help desk at 1-800-555-0100"


@pytest.fixture
def app_config():
    return {"IDP_BRAND_NAME": "Example Login", "IDP_MAIL_FROM": "no-reply@idp.example",
            "IDP_SUPPORT_CONTACT": SUPPORT, "IDP_PLUGINS": "plugins.mfa"}


def use(app, server, **overrides):
    """Point the IdP's mail settings at ``server``."""
    app.config.update(server.settings(**overrides))


def audit_events(event: str | None = None) -> list[AuditEvent]:
    db.session.expire_all()
    query = db.select(AuditEvent).order_by(AuditEvent.id)
    if event:
        query = query.where(AuditEvent.event == event)
    return list(db.session.scalars(query))


def html_sentence(html: str) -> str:
    """The HTML's visible text, tags stripped and whitespace folded."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split()).replace(" .", ".")


def one_line(text: str) -> str:
    return " ".join(text.split())


def new_passcode() -> str:
    return f"{secrets.randbelow(900000) + 100000}"


# --- what arrives -------------------------------------------------------------------------

def test_send_email_delivers_one_message_with_plain_text_and_html_parts(app, smtp_server):
    server = smtp_server()
    use(app, server)

    send_email(TO, "password_changed", kind="notice", user_id=7)

    assert len(server.messages) == 1
    received = server.messages[0]
    message = received.message
    assert received.mail_from == "no-reply@idp.example"
    assert received.rcpt_tos == [TO]
    assert message["From"].addresses[0].display_name == "Example Login"
    assert message["From"].addresses[0].addr_spec == "no-reply@idp.example"
    assert [a.addr_spec for a in message["To"].addresses] == [TO]
    assert message["Subject"] == "Your password was changed"
    assert re.fullmatch(r"<[^<>@\s]+@idp\.example>", message["Message-ID"])
    assert message["Date"] is not None and message["Date"].datetime is not None
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain",
                                                                        "text/html"]
    assert "The password of your Example Login was changed." in received.text
    assert "The password of your Example Login was changed." in received.html
    assert received.html.lstrip().startswith("<!doctype html>")
    assert not received.tls and received.login is None
    sent = audit_events("delivery_sent")
    assert [(e.user_id, e.detail["channel"], e.detail["to"], e.detail["backend"])
            for e in sent] == [(7, "email", "b**@mail.example", "smtp")]


def test_each_send_has_its_own_message_id(app, smtp_server):
    server = smtp_server()
    use(app, server)

    send_email(TO, "test_message")
    send_email(TO, "test_message")

    ids = [received.message["Message-ID"] for received in server.messages]
    assert len(ids) == 2 and ids[0] != ids[1]


@pytest.mark.parametrize("brand", ["Example, Inc. Login", "Café Connexion", 'The "Best" IdP'])
def test_brand_names_with_special_characters_make_a_valid_from_header(app, smtp_server, brand):
    server = smtp_server()
    use(app, server)
    app.config["IDP_BRAND_NAME"] = brand

    send_email(TO, "test_message")

    (address,) = server.messages[0].message["From"].addresses
    assert (address.display_name, address.addr_spec) == (brand, "no-reply@idp.example")


def test_a_display_name_in_mail_from_is_kept(app, smtp_server):
    server = smtp_server()
    use(app, server)
    app.config["IDP_MAIL_FROM"] = "Example Security <security@idp.example>"

    send_email(TO, "test_message")

    received = server.messages[0]
    (address,) = received.message["From"].addresses
    assert (address.display_name, address.addr_spec) == ("Example Security",
                                                          "security@idp.example")
    assert received.mail_from == "security@idp.example"


def test_a_recipient_that_is_not_one_address_is_refused_before_anything_is_sent(
        app, smtp_server):
    server = smtp_server()
    use(app, server)

    for bad in ("not an address", "bob@mail.example, eve@evil.example",
                "bob@mail.example\r\nBcc: eve@evil.example"):
        with pytest.raises(DeliveryError) as caught:
            send_email(bad, "passcode", {"code": "123456"}, kind="passcode", user_id=1)
        assert "address" in caught.value.user_message

    assert server.transactions == 0
    # Nothing was counted against the sender's throttles: a good address goes at once.
    send_email(TO, "passcode", {"code": "123456"}, kind="passcode", user_id=1)
    assert len(server.messages) == 1


# --- templates ----------------------------------------------------------------------------

LINK = "https://idp.example/verify-email/tok-ABCdef123"

# template -> (context, subject, a sentence of the body)
TEMPLATES = {
    "passcode": ({"code": "482913"}, "Your one-time passcode",
                 "This is your one-time passcode: 482913."),
    "verify_email": ({"link": LINK}, "Verify your email address",
                     "Please verify your email address for your Example Login"),
    "email_verified": ({"address": TO}, "Thank you for verifying your email",
                       f"Thank you for verifying your email. {TO} will be used for your "
                       "Example Login security messages"),
    "mfa_method_added": ({"method": "Authenticator app"},
                         "A sign-in method was added to your account",
                         "Authenticator app was added as a multifactor authentication method"),
    "mfa_contact_changed": ({"what": "phone number", "new_value": "(***) ***-0143"},
                            "Your multifactor authentication phone number was changed",
                            "The phone number used for multifactor authentication on your "
                            "Example Login was changed to (***) ***-0143. This notice goes to "
                            "the previous phone number too."),
    "recovery_code_used": ({"remaining": 7}, "A recovery code was used",
                           "A recovery code was used to sign in to your Example Login. 7 "
                           "recovery codes are left."),
    "password_changed": ({}, "Your password was changed",
                         "The password of your Example Login was changed."),
    "new_device_sign_in": ({"when": "March 3, 2025 at 09:15 UTC"},
                           "New sign-in to your account",
                           "Your Example Login was used to sign in from a new device on "
                           "March 3, 2025 at 09:15 UTC."),
    "mfa_cool_down": ({"failures": 10, "minutes": 15}, "Too many failed attempts to sign in",
                      "There were 10 failed attempts in a row to enter a multifactor "
                      "authentication (MFA) code for your Example Login."),
    "mfa_blocked": ({"method": "text message (SMS)", "others": True, "recovery": False,
                     "minutes": None},
                    "A multifactor authentication method was blocked",
                    "There were too many failed attempts in a row with text message (SMS) to "
                    "sign in to your Example Login."),
    "verify_account_email": ({"link": LINK, "link_minutes": 1440}, "Verify your email address",
                             "Please verify the email address of your new Example Login."),
    "username_reminder": ({"usernames": ["bob"]}, "Your user name",
                          "The user name registered with this email address is: bob"),
    "password_reset": ({"link": LINK, "link_minutes": 30, "username": "bob"},
                       "Reset your password",
                       "Someone asked to reset the password of the Example Login with the user "
                       "name bob."),
    "test_message": ({}, "Test message",
                     "This is a test message from Example Login. Email delivery works."),
    "change_account_email": ({"link": LINK, "link_minutes": 1440, "username": "bob"},
                             "Confirm your new account email",
                             "You asked to make this address the email of your Example Login "
                             "(user name bob)."),
    "account_email_changed": ({"old": "b***@example.com", "new": "b***@new.example"},
                              "Your account email was changed",
                              "The email of your Example Login was changed from "
                              "b***@example.com to b***@new.example."),
    "account_email_change_asked": ({"new": "m******@evil.example", "link_minutes": 60},
                                   "A change of your account email was asked for",
                                   "Someone signed in to your Example Login asked to change its "
                                   "email to m******@evil.example."),
    "mfa_method_removed": ({"method": "SMS"}, "A sign-in method was removed from your account",
                           "SMS was removed from the multifactor authentication methods of "
                           "your Example Login."),
}


def test_every_email_template_is_covered():
    names = {path.name.split(".")[0]: folder for folder in TEMPLATES_DIRS
             for path in folder.iterdir() if not path.name.startswith("_")}
    assert set(names) == set(TEMPLATES)
    for name, folder in names.items():
        for suffix in (".subject.txt", ".txt", ".html"):
            assert (folder / f"{name}{suffix}").is_file(), name + suffix


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_arrives_with_its_subject_text_and_html(app, smtp_server, template):
    server = smtp_server()
    use(app, server)
    context, subject, sentence = TEMPLATES[template]

    send_email(TO, template, context)

    (received,) = server.messages
    assert received.message["Subject"] == subject
    assert sentence in one_line(received.text)
    assert sentence in html_sentence(received.html)
    for body in (received.text, received.html):
        assert "{{" not in body and "{%" not in body
        assert f"Contact {SUPPORT}." in one_line(body)
    assert f"<title>{subject}</title>" in received.html


def test_verify_email_has_the_link_in_both_parts_and_a_clickable_button(app, smtp_server):
    server = smtp_server()
    use(app, server)

    send_email(TO, "verify_email", {"link": LINK}, kind="link")

    (received,) = server.messages
    assert LINK in received.text.splitlines()
    assert f'<a href="{LINK}"' in received.html
    assert "expires in 30 minutes" in one_line(received.text)


def test_passcode_email_says_the_exact_sentence_with_the_support_contact(app, smtp_server):
    server = smtp_server()
    use(app, server)
    code = new_passcode()

    send_email(TO, "passcode", {"code": code}, kind="passcode", user_id=1)

    expected = (f"This is your one-time passcode: {code}. For security reasons, this code will "
                f"expire in 5 minutes. If you did not take this action, please contact "
                f"{SUPPORT}.")
    (received,) = server.messages
    assert received.text.splitlines()[0] == expected
    assert expected in html_sentence(received.html)


def test_passcode_email_names_the_clients_help_contact_when_a_client_is_given(
        app, smtp_server):
    server = smtp_server()
    use(app, server)
    rp, _ = make_client(client_id="payroll", display_name="Payroll",
                        help_contact="payroll-help@rp.example")
    code = new_passcode()

    send_email(TO, "passcode", {"code": code}, kind="passcode", user_id=1, client=rp)

    expected = (f"This is your one-time passcode: {code}. For security reasons, this code will "
                "expire in 5 minutes. If you did not take this action, please contact "
                "payroll-help@rp.example.")
    (received,) = server.messages
    assert received.text.splitlines()[0] == expected
    assert expected in html_sentence(received.html)
    assert SUPPORT not in received.text


def test_a_client_without_help_contact_falls_back_to_the_support_contact(app, smtp_server):
    server = smtp_server()
    use(app, server)
    rp, _ = make_client(client_id="wiki", help_contact=None)

    send_email(TO, "passcode", {"code": "555123"}, kind="passcode", client=rp)

    assert f"please contact {SUPPORT}." in server.messages[0].text


@pytest.mark.parametrize("remaining, sentence", [
    (1, "1 recovery code is left."),
    (0, "0 recovery codes are left."),
    (None, "A recovery code was used to sign in to your Example Login. If you did not"),
])
def test_recovery_code_notice_counts_the_codes_left_in_good_english(app, smtp_server,
                                                                    remaining, sentence):
    server = smtp_server()
    use(app, server)

    send_email(TO, "recovery_code_used", {"remaining": remaining})

    (received,) = server.messages
    assert sentence in one_line(received.text)
    assert sentence in html_sentence(received.html)
    assert "None" not in received.text


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.mark.parametrize("template, context", [
    ("email_verified", {"address": HOSTILE}),
    ("mfa_method_added", {"method": HOSTILE}),
    ("mfa_contact_changed", {"what": "email", "new_value": HOSTILE}),
    ("new_device_sign_in", {"when": HOSTILE}),
    ("recovery_code_used", {"remaining": HOSTILE}),
    ("passcode", {"code": HOSTILE}),
])
def test_html_parts_escape_user_controlled_values(app, smtp_server, template, context):
    server = smtp_server()
    use(app, server)

    send_email(TO, template, context)

    (received,) = server.messages
    assert "<script>" not in received.html and "<img" not in received.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img" in received.html
    assert HOSTILE in received.text  # plain text is shown as text, not markup


def test_client_name_help_contact_and_brand_are_escaped_in_html(app, smtp_server):
    server = smtp_server()
    use(app, server)
    app.config["IDP_BRAND_NAME"] = "Brand <b>bold</b>"
    rp, _ = make_client(client_id="evil", display_name="<i>Evil</i> & Co",
                        help_contact="<a href='https://evil.example'>help</a>")

    send_email(TO, "verify_email", {"link": 'https://idp.example/v?t=1"onclick="x'},
               kind="link", client=rp)

    html = server.messages[0].html
    assert "<b>" not in html and "<i>" not in html and "evil.example'>" not in html
    assert "&lt;i&gt;Evil&lt;/i&gt; &amp; Co" in html
    assert 'href="https://idp.example/v?t=1&#34;onclick=&#34;x"' in html


def test_a_value_with_line_breaks_cannot_add_headers(app, smtp_server):
    server = smtp_server()
    use(app, server)

    send_email(TO, "mfa_contact_changed",
               {"what": "email\r\nBcc: eve@evil.example\r\n", "new_value": "x"})

    (received,) = server.messages
    assert received.rcpt_tos == [TO]
    assert received.message["Bcc"] is None
    assert "\n" not in received.message["Subject"]


# --- TLS and login ------------------------------------------------------------------------

MAILER = ("idp-mailer", "s3cret-Mailer-pass")


def test_starttls_with_login_delivers_over_an_encrypted_authenticated_session(
        app, smtp_server):
    server = smtp_server("starttls", login=MAILER)
    use(app, server)

    send_email(TO, "test_message")

    (received,) = server.messages
    assert received.tls
    assert received.login == "idp-mailer"
    assert server.auth_attempts == [("idp-mailer", True)]


def test_messages_in_a_row_share_one_encrypted_logged_in_connection(app, smtp_server):
    server = smtp_server("starttls", login=MAILER)
    use(app, server)

    for _ in range(3):
        send_email(TO, "test_message")

    assert [(m.tls, m.login) for m in server.messages] == [(True, "idp-mailer")] * 3
    assert server.auth_attempts == [("idp-mailer", True)]  # one login, one handshake


def test_a_connection_idle_too_long_is_not_reused(app, smtp_server, monkeypatch):
    server = smtp_server("starttls", login=MAILER)
    use(app, server)
    monkeypatch.setattr(mail, "IDLE_SECONDS", 0.0)

    send_email(TO, "test_message")
    send_email(TO, "test_message")

    assert len(server.messages) == 2
    assert server.auth_attempts == [("idp-mailer", True)] * 2


def test_a_kept_connection_that_died_is_replaced_and_the_message_arrives_once(
        app, smtp_server):
    server = smtp_server()
    use(app, server)
    send_email(TO, "test_message")
    _settings, kept, _last_used = mail._HELD.smtp
    kept.sock.shutdown(socket.SHUT_RDWR)  # as a server that dropped an idle client

    send_email(TO, "verify_email", {"link": "https://idp.example/mfa/email/x"})

    assert len(server.messages) == 2 and server.transactions == 2  # offered once each


def test_a_connection_kept_for_another_server_is_not_used(app, smtp_server):
    first, second = smtp_server(), smtp_server()
    use(app, first)
    send_email(TO, "test_message")
    use(app, second)
    send_email(TO, "test_message")

    assert len(first.messages) == 1 and len(second.messages) == 1


def test_starttls_server_refuses_mail_without_the_login(app, smtp_server):
    server = smtp_server("starttls", login=MAILER)
    use(app, server, IDP_SMTP_USERNAME="", IDP_SMTP_PASSWORD="")

    with pytest.raises(DeliveryError):
        send_email(TO, "test_message")

    assert server.messages == []


def test_wrong_smtp_password_fails_cleanly_once_and_is_not_recorded(app, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = smtp_server("starttls", login=MAILER)
    use(app, server, IDP_SMTP_PASSWORD="wrong-password-42")

    with pytest.raises(DeliveryError) as caught:
        send_email(TO, "test_message", user_id=3)

    assert "another method" in caught.value.user_message
    assert "login" in caught.value.reason.lower()
    assert server.messages == [] and server.transactions == 0
    assert server.auth_attempts == [("idp-mailer", False)]
    (failed,) = audit_events("delivery_failed")
    assert failed.user_id == 3 and "login" in failed.detail["error"].lower()
    assert "wrong-password-42" not in json.dumps(failed.detail)
    assert "wrong-password-42" not in caught.value.reason
    assert "wrong-password-42" not in caplog.text


def test_implicit_tls_delivers(app, smtp_server):
    server = smtp_server("tls")
    use(app, server)

    send_email(TO, "test_message")

    (received,) = server.messages
    assert received.tls


def test_implicit_tls_with_login_delivers(app, smtp_server):
    server = smtp_server("tls", login=MAILER)
    use(app, server)

    send_email(TO, "test_message")

    assert [m.login for m in server.messages] == ["idp-mailer"]


@pytest.fixture(scope="module")
def other_tls_files(tmp_path_factory):
    """Certificates from a CA the IdP is not told to trust, and a trusted one for the wrong
    host name."""
    root = tmp_path_factory.mktemp("other-tls")
    return {"other-ca": make_tls_files(root / "other", label="Other"),
            "wrong-name": make_tls_files(root / "wrong", names=("mail.elsewhere.example",))}


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.parametrize("case", ["other-ca", "system-store-only", "wrong-name"])
def test_a_server_certificate_not_trusted_is_refused_before_login_or_send(
        app, smtp_server, smtp_tls_files, other_tls_files, security, case):
    if case == "other-ca":
        # The server shows a certificate from another CA than the one configured.
        server = smtp_server(security, login=MAILER, tls_files=other_tls_files["other-ca"])
        use(app, server, IDP_SMTP_CA_FILE=str(smtp_tls_files.ca_file))
    elif case == "system-store-only":
        server = smtp_server(security, login=MAILER)
        use(app, server, IDP_SMTP_CA_FILE="")
    else:
        # A trusted CA, but the certificate names another host.
        files = other_tls_files["wrong-name"]
        server = smtp_server(security, login=MAILER, tls_files=files)
        use(app, server, IDP_SMTP_CA_FILE=str(files.ca_file))

    with pytest.raises(DeliveryError) as caught:
        send_email(TO, "test_message")

    assert "certificate" in caught.value.reason.lower()
    assert server.messages == [] and server.transactions == 0
    assert server.auth_attempts == []  # the password never went over it
    (failed,) = audit_events("delivery_failed")
    assert "certificate" in failed.detail["error"].lower()


def test_starttls_to_a_server_without_starttls_is_refused(app, smtp_server, smtp_tls_files):
    server = smtp_server("none")
    use(app, server, IDP_SMTP_SECURITY="starttls", IDP_SMTP_CA_FILE=str(smtp_tls_files.ca_file))

    with pytest.raises(DeliveryError) as caught:
        send_email(TO, "test_message")

    assert "starttls" in caught.value.reason.lower()
    assert server.transactions == 0


def test_a_missing_ca_file_fails_as_a_delivery_error(app, smtp_server, tmp_path):
    server = smtp_server("starttls")
    use(app, server, IDP_SMTP_CA_FILE=str(tmp_path / "missing-ca.pem"))

    with pytest.raises(DeliveryError) as caught:
        send_email(TO, "test_message")

    assert "missing-ca.pem" in caught.value.reason
    assert server.transactions == 0
    assert len(audit_events("delivery_failed")) == 1


# --- failure modes ------------------------------------------------------------------------

def check_failure(caught, user_id, code, reason_words):
    """The DeliveryError offers a way forward; one audit event without the passcode."""
    error = caught.value
    assert "Try again" in error.user_message and "another method" in error.user_message
    assert "Nothing you have done so far is lost" in error.user_message
    assert any(word in error.reason.lower() for word in reason_words), error.reason
    (failed,) = audit_events("delivery_failed")
    assert failed.user_id == user_id
    assert failed.detail["channel"] == "email" and failed.detail["kind"] == "passcode"
    assert failed.detail["to"] == "b**@mail.example"
    assert failed.detail["backend"] == "smtp"
    assert any(word in failed.detail["error"].lower() for word in reason_words)
    assert code not in json.dumps(failed.detail)
    assert TO not in json.dumps(failed.detail)
    assert audit_events("delivery_sent") == []


def test_connection_refused_raises_delivery_error_and_is_audited(app):
    port = closed_port()
    app.config.update(IDP_MAIL_BACKEND="smtp", IDP_SMTP_HOST="127.0.0.1", IDP_SMTP_PORT=port,
                      IDP_SMTP_SECURITY="none")
    code = new_passcode()

    with pytest.raises(DeliveryError) as caught:
        send_email(TO, "passcode", {"code": code}, kind="passcode", user_id=5)

    check_failure(caught, 5, code, ["refused"])
    assert f"127.0.0.1:{port}" in caught.value.reason


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
def test_a_server_that_never_answers_times_out_quickly(app, silent_server, smtp_tls_files,
                                                       security):
    app.config.update(IDP_MAIL_BACKEND="smtp", IDP_SMTP_HOST=silent_server.host,
                      IDP_SMTP_PORT=silent_server.port, IDP_SMTP_SECURITY=security,
                      IDP_SMTP_CA_FILE=str(smtp_tls_files.ca_file), IDP_SMTP_TIMEOUT=0.5)
    code = new_passcode()

    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        send_email(TO, "passcode", {"code": code}, kind="passcode", user_id=5)
    elapsed = time.monotonic() - started

    assert elapsed < 3
    check_failure(caught, 5, code, ["timed out", "no answer"])
    assert len(silent_server.connections) == 1  # no second attempt


@pytest.mark.parametrize("step, reply", [
    ("rcpt", "550 5.1.1 No such user here"),
    ("rcpt", "451 4.3.0 Try again later"),
    ("data", "554 5.7.1 Message rejected as spam"),
    ("data", "451 4.7.1 Greylisted, try again later"),
])
def test_a_server_refusal_raises_delivery_error_once_and_is_audited(app, smtp_server, step,
                                                                    reply):
    server = smtp_server(**{f"{step}_reply": reply})
    use(app, server)
    code = new_passcode()

    with pytest.raises(DeliveryError) as caught:
        send_email(TO, "passcode", {"code": code}, kind="passcode", user_id=5)

    status = reply.split()[0]
    check_failure(caught, 5, code, [status])
    assert server.messages == []
    assert server.transactions == 1  # one attempt: no retry
    assert server.handler.data_commands == (1 if step == "data" else 0)


def test_after_a_failure_the_user_can_retry_at_once_and_gets_one_message(app, smtp_server):
    server = smtp_server(data_reply="451 4.3.0 Try again later")
    use(app, server)

    with pytest.raises(DeliveryError):
        send_email(TO, "passcode", {"code": "111111"}, kind="passcode", user_id=5)
    server.handler.data_reply = None
    send_email(TO, "passcode", {"code": "222222"}, kind="passcode", user_id=5)

    assert [m.text.split(":")[1].split(".")[0].strip() for m in server.messages] == ["222222"]
    assert server.transactions == 2


def test_a_server_closing_the_kept_connection_loses_no_message_and_sends_none_twice(
        app, smtp_server, monkeypatch):
    from aiosmtpd.smtp import SMTP

    async def closing_noop(self, arg):
        await self.push("421 4.3.0 Closing anyway")
        self.transport.close()

    monkeypatch.setattr(SMTP, "smtp_NOOP", closing_noop)
    server = smtp_server()
    use(app, server)

    send_email(TO, "test_message", user_id=2)
    send_email(TO, "test_message", user_id=2)  # the kept connection is refused: a new one

    assert len(server.messages) == 2 and server.transactions == 2
    assert audit_events("delivery_failed") == []
    assert len(audit_events("delivery_sent")) == 2


# --- secrets stay out of logs and the audit ----------------------------------------------

def idp_log_text(caplog) -> str:
    """Everything the IdP logged (not the test SMTP server's own transcript)."""
    lines = []
    for record in caplog.records:
        if record.name.startswith("mail.log"):
            continue
        lines.append(record.getMessage())
        if record.exc_text:
            lines.append(record.exc_text)
    return "\n".join(lines)


@pytest.mark.parametrize("server_up", [True, False], ids=["delivered", "refused"])
def test_passcodes_and_link_tokens_never_appear_in_logs_or_audit(app, smtp_server, caplog,
                                                                 server_up):
    caplog.set_level(logging.DEBUG)
    server = smtp_server()
    if server_up:
        use(app, server)
    else:
        use(app, server, IDP_SMTP_PORT=closed_port())
    code = new_passcode()
    token = secrets.token_urlsafe(24)
    link = f"https://idp.example/verify-email/{token}"

    for template, context, kind in (("passcode", {"code": code}, "passcode"),
                                    ("verify_email", {"link": link}, "link")):
        try:
            send_email(TO, template, context, kind=kind, user_id=9)
        except DeliveryError as exc:
            assert not server_up
            assert code not in exc.reason and token not in exc.reason

    if server_up:
        assert code in server.messages[0].text and token in server.messages[1].text
    logged = idp_log_text(caplog)
    assert "delivery" in logged  # the sends were logged, only without secrets
    assert code not in logged and token not in logged
    events = audit_events()
    assert len(events) == 2
    for event in events:
        assert code not in json.dumps(event.detail) and token not in json.dumps(event.detail)


# --- the CLI ------------------------------------------------------------------------------

def test_cli_test_email_sends_the_test_message(app, smtp_server, runner):
    server = smtp_server("starttls", login=MAILER)
    use(app, server)

    result = runner.invoke(args=["delivery", "test-email", "--to", "ops@mail.example"])

    assert result.exit_code == 0, result.output
    assert "Sent a test email to ops@mail.example" in result.output
    (received,) = server.messages
    assert received.rcpt_tos == ["ops@mail.example"]
    assert received.message["Subject"] == "Test message"
    assert "Email delivery works." in received.text


def test_cli_test_email_fails_clearly_when_the_server_is_down(app, runner):
    port = closed_port()
    app.config.update(IDP_MAIL_BACKEND="smtp", IDP_SMTP_HOST="127.0.0.1", IDP_SMTP_PORT=port)

    result = runner.invoke(args=["delivery", "test-email", "--to", "ops@mail.example"])

    assert result.exit_code != 0
    assert "Not sent" in result.output
    assert f"127.0.0.1:{port}" in result.output and "refused" in result.output
    assert "Traceback" not in result.output
