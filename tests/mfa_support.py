"""The MFA tests' world: the plugin on, email through a real SMTP server on loopback, SMS
through the webhook backend to a local receiver, and a browser-like helper that walks the
MFA pages and reads the passcodes and links where a person would find them.

Use it from a test module with::

    from tests.mfa_support import *  # noqa: F403 - fixtures: mail, sms, app_config, mfa

and the fixtures ``mfa`` (an :class:`MfaBrowser` on the ``client``), ``mail`` (the SMTP
server), ``sms`` (the webhook receiver), ``browser`` (a factory of other browsers).
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest import PASSWORD, OidcActions, forms, make_client, make_user
from tests.http_receivers import WebhookReceiver

WEBHOOK_SECRET = "webhook-secret-for-tests"
BEFORE_CUTOFF = datetime(2024, 5, 1)
AFTER_CUTOFF = datetime(2025, 6, 1)
ACR_PWD = "urn:idp:acr:pwd"
ACR_MFA = "urn:idp:acr:mfa"
ACR_AAL2 = "http://idmanagement.gov/ns/assurance/aal/2"


@pytest.fixture
def mail(smtp_server):
    return smtp_server()


@pytest.fixture
def sms(request):
    return WebhookReceiver.started(request)


@pytest.fixture
def mfa_settings(mail, sms):
    """Settings of an IdP with the MFA plugin, real SMTP and the SMS webhook. Override
    ``mfa_settings`` (or ``app_config``) in a module to change them."""
    return {
        "IDP_PLUGINS": "plugins.mfa",
        **mail.settings(),
        "IDP_SMS_BACKEND": "webhook",
        "IDP_SMS_WEBHOOK_URL": sms.url + "/sms",
        "IDP_SMS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "IDP_SMS_TIMEOUT": 5.0,
        # Tests walk faster than a person: no wait between resends unless a test wants one.
        "IDP_PASSCODE_RESEND_SECONDS": 0,
    }


@pytest.fixture
def app_config(mfa_settings):
    return mfa_settings


def heading(response) -> str:
    match = re.search(r"<h1>(.*?)</h1>", response.get_data(as_text=True), re.S)
    return match.group(1).strip() if match else ""


def alert_text(response) -> str:
    match = re.search(r'role="alert">(.*?)</', response.get_data(as_text=True), re.S)
    return " ".join(match.group(1).split()) if match else ""


class MfaBrowser(OidcActions):
    """A browser (a Flask test client) that signs in and walks the MFA pages."""

    # After a recovery code, Set Up a New Method is answered Not Now on the way back to the
    # application (its own tests press its buttons).
    AUTO_ANSWERS = {**OidcActions.AUTO_ANSWERS, "<h1>Set Up a New Method</h1>": "not_now"}

    def __init__(self, http, mail, sms):
        super().__init__(http)
        self.mail, self.sms = mail, sms

    # -- navigation -------------------------------------------------------------------

    def go(self, response, limit=10):
        """Follow redirects inside the IdP; stop at a page or at the client's redirect."""
        for _ in range(limit):
            if response.status_code != 302:
                return response
            location = response.headers["Location"]
            if not location.startswith("/") and not location.startswith("http://localhost"):
                return response
            response = self.http.get(location)
        raise AssertionError("too many redirects")

    def start(self, rp, username="alice", password=PASSWORD, **params):
        """Authorize and type the password; returns the first page after it."""
        return self.go(self.login(self.authorize(rp, **params), username, password))

    def post_form(self, response, data=None, prefix="", button=None, index=0):
        """Submit form ``index`` of the page: its hidden fields, ``data`` and a button."""
        form = forms(response.get_data(as_text=True))[index]
        fields = {k: v for k, v in form["fields"].items()
                  if k.startswith(prefix) and "csrf_token" in k}
        fields.update(data or {})
        if button:
            fields[button] = "1"
        return self.go(self.http.post(form["action"] or response.request.path, data=fields))

    def click(self, response, text):
        """Follow the link whose text is ``text``."""
        html = response.get_data(as_text=True)
        match = re.search(r'<a [^>]*href="([^"]+)"[^>]*>\s*' + re.escape(text), html)
        assert match, f"no link {text!r} on {heading(response)!r}"
        return self.go(self.http.get(match.group(1).replace("&amp;", "&")))

    def method_buttons(self, response) -> dict[str, str]:
        """The challenge's "Use another method" buttons: label -> the factor each asks for."""
        html = response.get_data(as_text=True)
        return {label.strip(): kind for kind, label in re.findall(
            r'<button [^>]*name="m-factor" value="([^"]+)"[^>]*>([^<]+)</button>', html)}

    def use_method(self, response, label):
        """Press the challenge's "Use another method" button ``label``."""
        kind = self.method_buttons(response).get(label)
        assert kind, f"no method {label!r} on {heading(response)!r}"
        return self.ask_for_method(response, kind)

    def ask_for_method(self, response, kind):
        """Post the "Use another method" form with ``kind``, offered on the page or not (with
        the CSRF token of the page's first form when it shows no such form)."""
        token = next(value for name, value in forms(response.get_data(as_text=True))[0][
            "fields"].items() if name.endswith("csrf_token"))
        return self.go(self.http.post(response.request.path + "/method",
                                      data={"m-csrf_token": token, "m-factor": kind}))

    # -- pages --------------------------------------------------------------------------

    def enroll_in_mfa(self, page):
        assert heading(page) == "Multifactor Authentication (MFA)", heading(page)
        return self.post_form(page, button="enroll")

    def not_now(self, page):
        return self.post_form(page, button="not_now")

    def verify_email_yes(self, page):
        assert heading(page) == "Verify Your Email"
        return self.post_form(page, {"c-choice": "yes", "c-submit": "Continue"}, prefix="c-")

    def verify_email_change(self, page, address):
        page = self.post_form(page, {"c-choice": "no", "c-submit": "Continue"}, prefix="c-")
        return self.post_form(page, {"e-email": address, "e-submit": "Send Email Link"},
                              prefix="e-")

    def continue_after_link(self, page):
        return self.post_form(page, {"k-submit": "Continue"}, prefix="k-", index=0)

    def choose_method(self, page, method):
        assert heading(page) == "Choose Your MFA Method", heading(page)
        return self.post_form(page, {"method": method, "submit": "Continue"})

    def enter_phone(self, page, number="(202) 555-0143"):
        assert heading(page) == "Verify Your Phone Number", heading(page)
        return self.post_form(page, {"phone": number, "submit": "Send Passcode"})

    def submit_passcode(self, page, code, remember=True):
        data = {"passcode": code, "submit": "Submit"}
        if remember:
            data["remember"] = "y"
        return self.post_form(page, data)

    def resend(self, page):
        index = next(i for i, f in enumerate(forms(page.get_data(as_text=True)))
                     if "r-resend" in f["fields"])
        return self.post_form(page, {"r-resend": "Resend"}, prefix="r-", index=index)

    def continue_from_recovery_codes(self, page):
        assert heading(page) == "Save Your Recovery Codes", heading(page)
        return self.click(page, "Continue")

    def recovery_codes(self, page) -> list[str]:
        return re.findall(r"<code>([A-Z0-9-]{19})</code>", page.get_data(as_text=True))

    # -- where codes and links arrive ---------------------------------------------------------

    def last_email(self, to=None):
        messages = [m for m in self.mail.messages if to is None or to in m.rcpt_tos]
        assert messages, "no email arrived"
        return messages[-1]

    def email_passcode(self, to=None) -> str:
        return re.search(r"passcode: (\d{6})", self.last_email(to).text).group(1)

    def email_link(self, to=None) -> str:
        link = re.search(r"(http://localhost/mfa/email-link\?token=\S+)",
                         self.last_email(to).text).group(1)
        return link.replace("http://localhost", "")

    def sms_messages(self) -> list[dict]:
        return [json.loads(r.body) for r in self.sms.requests]

    def sms_passcode(self, to="+12025550143") -> str:
        bodies = [m["body"] for m in self.sms_messages() if m["to"] == to]
        assert bodies, f"no text message to {to}"
        return re.search(r"\b(\d{6})\b", bodies[-1]).group(1)

    # -- whole journeys -------------------------------------------------------------------

    def enroll_by_sms(self, rp, number="(202) 555-0143", remember=True, **params):
        """A new account's first sign-in, enrolling by SMS; returns the callback params."""
        page = self.verify_email_yes(self.enroll_in_mfa(self.start(rp, **params)))
        self.http.get(self.email_link())
        page = self.choose_method(self.continue_after_link(page), "sms")
        page = self.submit_passcode(self.enter_phone(page, number), self.sms_passcode(),
                                    remember=remember)
        return self.finish(self.continue_from_recovery_codes(page))

    def finish(self, response):
        """Accept consent/terms pages and return the callback parameters."""
        return self.callback_params(self.follow(response))

    def id_token_claims(self, rp, secret, params) -> dict:
        response = self.token(rp, secret, params["code"])
        assert response.status_code == 200, response.get_json()
        keyset = KeySet.import_key_set(self.http.get("/jwks.json").get_json())
        return jwt.decode(response.get_json()["id_token"], keyset).claims


@pytest.fixture
def mfa(client, mail, sms):
    return MfaBrowser(client, mail, sms)


@pytest.fixture
def browser(app, mail, sms):
    """Another browser (its own cookies): ``browser()``."""
    return lambda: MfaBrowser(app.test_client(), mail, sms)


@pytest.fixture
def new_user(app):
    """An account created after the cutoff: MFA is mandatory."""
    return make_user("alice", created_at=AFTER_CUTOFF)


@pytest.fixture
def old_user(app):
    """An account created before the cutoff: MFA is offered."""
    return make_user("olga", created_at=BEFORE_CUTOFF)


@pytest.fixture
def cohort_rp(app):
    return make_client(client_id="cns", settings={"mfa_policy": "cohort",
                                                  "remembered_devices": True})


@pytest.fixture
def strict_rp(app):
    """A client that requires MFA for everyone and refuses remembered devices."""
    return make_client(client_id="cop", redirect_uris=["https://cop.example/cb"],
                       settings={"mfa_policy": "always", "remembered_devices": False})


__all__ = ["ACR_AAL2", "ACR_MFA", "ACR_PWD", "AFTER_CUTOFF", "BEFORE_CUTOFF", "MfaBrowser",
           "alert_text", "app_config", "browser", "cohort_rp", "heading", "mail", "mfa",
           "mfa_settings", "new_user", "old_user", "sms", "strict_rp"]
