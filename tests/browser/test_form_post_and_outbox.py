"""Two pages the other journeys pass by: the ``form_post`` answer, which carries the code back
to the application in a form the browser posts, and the development outbox that ``make run``
points newcomers to for their passcodes and links."""

from __future__ import annotations

import re

import pytest

from tests.browser.support import BEFORE_CUTOFF, CHALLENGE, IdpServer, RelyingParty, to_e164

NOT_NOW = "Not Now"


def posted_response(idp: IdpServer, rp: RelyingParty, state: str) -> dict:
    """The form the browser posted to ``rp``'s redirect URI for the request with ``state``."""
    path = "/" + rp.app.redirect_uri.split("/", 3)[3]
    posts = [r.form() for r in list(idp.apps.requests) if r.method == "POST" and r.path == path]
    matching = [form for form in posts if form.get("state") == state]
    assert len(matching) == 1, posts
    return matching[0]


def test_form_post_carries_the_code_back_to_the_application_by_post(idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="fp")
    pat = person("pat")
    request = pat.start(cns, response_mode="form_post")
    pat.log_in(account)
    assert pat.heading == CHALLENGE

    with pat.page.expect_request(lambda r: r.method == "POST"
                                 and r.url == cns.app.redirect_uri):
        pat.page.get_by_role("button", name=NOT_NOW, exact=True).click()
    pat.page.wait_for_url(cns.app.redirect_uri, wait_until="load")
    pat.passed_through()

    form = posted_response(idp, cns, request.state)
    assert set(form) == {"code", "state", "iss"}
    claims = cns.claims_from_response(request, form)
    assert claims["sub"] == account.sub


def test_without_javascript_the_form_post_page_offers_continue(idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="ns")
    sam = person("sam", java_script_enabled=False)
    request = sam.start(cns, response_mode="form_post")
    sam.log_in(account)
    sam.press(NOT_NOW)

    assert sam.heading == "Returning to the application"
    assert "press Continue" in sam.text()
    sam.press("Continue")

    assert sam.page.url == cns.app.redirect_uri
    claims = cns.claims_from_response(request, posted_response(idp, cns, request.state))
    assert claims["sub"] == account.sub


@pytest.fixture(scope="module")
def outbox_idp(idp, tmp_path_factory):
    """An IdP as ``make run`` serves it: email and text messages go to the development
    outbox page instead of SMTP and the webhook."""
    server = IdpServer(tmp_path_factory.mktemp("outbox-idp"), idp.mail, idp.sms, idp.apps)
    server.env.update(IDP_MAIL_BACKEND="outbox", IDP_SMS_BACKEND="outbox", IDP_DEV_OUTBOX="1")
    try:
        server.start()
        server.register_client("cns", "Click-N-Ship", "Print shipping labels.",
                               "Click-N-Ship help: 1-800-555-0101", "--mfa-policy", "cohort")
        yield server
    finally:
        server.stop()


def test_a_new_account_enrolls_with_the_link_and_passcode_from_the_outbox_page(
        outbox_idp, person):
    rp = RelyingParty(outbox_idp, outbox_idp.clients["cns"])
    account = outbox_idp.new_account(prefix="tour")
    phone = outbox_idp.new_phone()
    newcomer = person("newcomer", server=outbox_idp)
    # The outbox is read in another window, as a newcomer following the tour would.
    reader = person("outbox", server=outbox_idp)

    request = newcomer.start(rp)
    newcomer.log_in(account)
    newcomer.press("Enroll in MFA")
    assert newcomer.heading == "Verify Your Email"
    newcomer.choose("Yes")
    newcomer.press("Continue")
    assert not outbox_idp.emails_to(account.email)  # nothing went to SMTP

    reader.open(outbox_idp.url + "/dev/outbox")
    assert reader.heading == "Development outbox"
    email = reader.page.get_by_role("article").filter(has_text=f"Email to {account.email}")
    assert email.count() == 1
    with newcomer.navigation():
        newcomer.page.goto(email.get_by_role("link").first.get_attribute("href"))
    assert newcomer.heading == "Thank you for verifying your email"
    newcomer.press("Continue")

    assert newcomer.heading == "Choose Your MFA Method"
    newcomer.choose("SMS")
    newcomer.press("Continue")
    texts_by_webhook = len(outbox_idp.texts_to(to_e164(phone)))  # the shared receiver's
    newcomer.fill("Phone Number", phone)
    newcomer.press("Send Passcode")
    assert len(outbox_idp.texts_to(to_e164(phone))) == texts_by_webhook

    reader.open(outbox_idp.url + "/dev/outbox")
    text = reader.page.get_by_role("article").filter(
        has_text=f"Text message to {to_e164(phone)}")
    assert text.count() == 1
    passcode = re.search(r"\b(\d{6})\b", text.inner_text()).group(1)
    newcomer.submit_passcode(passcode)

    assert newcomer.heading == "Save Your Recovery Codes"
    newcomer.follow("Continue")
    claims = newcomer.back_at(rp, request)
    assert claims["sub"] == account.sub and "sms" in claims["amr"]
