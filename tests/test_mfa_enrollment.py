"""Enrollment in MFA, path by path (DESIGN §2): the mandatory offer to new accounts, Not Now
for older ones, Verify Your Email (Yes, or another address by link, also opened in another
browser), then SMS, email passcode or an authentication app, recovery codes, the notices,
the branding of every page and what happens when a message cannot be delivered. Every
journey that reaches the client ends by checking the ID token's ``amr`` and ``acr``.
"""

from __future__ import annotations

import base64
import html as htmllib
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from sqlalchemy import MetaData

from idp.crypto import decrypt
from idp.extensions import db
from idp.models import AuditEvent, User
from idp.security import digest
from idp.timeutil import utcnow
from plugins.mfa.models import EmailVerification, MfaAccount, MfaFactor, Passcode, RecoveryCode
from tests.conftest import forms, make_client
from tests.mfa_support import *  # noqa: F403 - fixtures: mail, sms, mfa, browser, users, clients
from tests.mfa_support import ACR_AAL2, ACR_MFA, ACR_PWD, alert_text, heading

OFFER = "Multifactor Authentication (MFA)"
CHALLENGE = "Multifactor Authentication (MFA)"
VERIFY_EMAIL = "Verify Your Email"
THANK_YOU = "Thank you for verifying your email"
CHOOSE = "Choose Your MFA Method"
PHONE_PAGE = "Verify Your Phone Number"
APP_PAGE = "Set Up Your Authentication App"
RECOVERY = "Save Your Recovery Codes"
PHONE_E164 = "+12025550143"
CNS_HELP = "https://emailus.usps.com/s/click-n-ship-inquiry"


@pytest.fixture
def cns(app):
    """A client with its own name and help contact, MFA per the account's cohort."""
    return make_client(client_id="click-n-ship", name="cns", display_name="Click-N-Ship",
                       redirect_uris=["https://cns.example/cb"], help_contact=CNS_HELP,
                       settings={"mfa_policy": "cohort", "remembered_devices": True})


@pytest.fixture
def informed(app):
    """A second client of the same SSO session."""
    return make_client(client_id="informed", display_name="Informed Delivery",
                       redirect_uris=["https://informed.example/cb"],
                       help_contact="https://emailus.usps.com/s/my-online-account-inquiry",
                       settings={"mfa_policy": "cohort"})


# --- helpers ------------------------------------------------------------------------------


def text(page) -> str:
    """The visible text of a page, tags removed and spaces collapsed."""
    body = re.sub(r"<[^>]+>", " ", page.get_data(as_text=True))
    return " ".join(htmllib.unescape(body).split())


def alert(page) -> str:
    """The text of the page's ``role="alert"`` element."""
    return htmllib.unescape(alert_text(page))


def pending_id(page) -> str:
    return page.request.path.rstrip("/").split("/")[-1]


def buttons(page) -> list[str]:
    return re.findall(r'type="submit" value="([^"]+)"', page.get_data(as_text=True))


def field_error(page, name: str) -> str:
    """The error shown next to field ``name``, which the field points to."""
    html = page.get_data(as_text=True)
    field = re.search(rf'<input [^>]*name="{name}"[^>]*>', html).group(0)
    assert f'aria-describedby="{name}-error"' in field, field
    assert 'aria-invalid="true"' in field, field
    match = re.search(rf'<p class="field-error" id="{name}-error">(.*?)</p>', html, re.S)
    assert match, f"no error next to {name}"
    return htmllib.unescape(match.group(1))


def field_value(page, name: str) -> str:
    return forms(page.get_data(as_text=True))[0]["fields"].get(name, "")


def at_client(response, rp) -> bool:
    return response.status_code == 302 and response.headers["Location"].startswith(
        rp.redirect_uris[0])


def audit(event: str, user_id: int | None = None) -> list[AuditEvent]:
    db.session.expire_all()
    query = db.select(AuditEvent).filter_by(event=event).order_by(AuditEvent.id)
    if user_id is not None:
        query = query.filter_by(user_id=user_id)
    return list(db.session.scalars(query))


def step_reasons(step: str, user_id: int, client_id: str | None = None) -> list[str]:
    return [e.detail["reason"] for e in audit("sign_in_step", user_id)
            if e.detail.get("step") == step and (client_id is None or e.client_id == client_id)]


def mfa_account(user_id: int) -> MfaAccount | None:
    db.session.expire_all()
    return db.session.get(MfaAccount, user_id)


def verified_mfa_email(user_id: int) -> str | None:
    account = mfa_account(user_id)
    return account.mfa_email if account and account.mfa_email_verified_at else None


def factors_of(user_id: int) -> dict[str, MfaFactor]:
    db.session.expire_all()
    return {f.kind: f for f in db.session.scalars(db.select(MfaFactor).filter_by(user_id=user_id))}


def database_bytes(app) -> bytes:
    """Everything the database holds (the SQLite file, or every PostgreSQL row as text), to
    show a secret is not in it in the clear."""
    db.session.commit()
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).read_bytes()
    tables = MetaData()
    tables.reflect(bind=db.engine)
    rows = [str(tuple(row)) for table in tables.sorted_tables
            for row in db.session.execute(db.select(table))]
    assert rows, "the database is empty"
    return "\n".join(rows).encode()


def link_token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def emails_to(mfa, address: str, subject: str | None = None):
    return [m for m in mfa.mail.messages if address in m.rcpt_tos
            and (subject is None or m.message["Subject"] == subject)]


def sms_to(mfa, number: str) -> list[str]:
    return [m["body"] for m in mfa.sms_messages() if m["to"] == number]


def to_methods(mfa, rp, username="alice", **params):
    """Sign in, Enroll in MFA, Yes, open the link, Continue: the method choice page."""
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp, username, **params)))
    mfa.http.get(mfa.email_link(to=f"{username}@example.com"))
    page = mfa.continue_after_link(page)
    assert heading(page) == CHOOSE, heading(page)
    return page


def finish_enrollment(mfa, rp, secret, page) -> dict:
    """From the recovery codes page to the client; returns the ID token's claims."""
    params = mfa.finish(mfa.continue_from_recovery_codes(page))
    assert "code" in params, params
    return mfa.id_token_claims(rp, secret, params)


def totp_secret(page) -> str:
    return re.search(r'<code class="secret">([A-Z2-7]+)</code>',
                     page.get_data(as_text=True)).group(1)


# --- a new account: enrollment is mandatory -------------------------------------------------


def test_new_account_offer_says_why_and_offers_only_enroll_in_mfa(mfa, new_user, cohort_rp):
    rp, _ = cohort_rp
    page = mfa.start(rp)

    assert heading(page) == OFFER
    assert "Accounts created on or after March 6, 2025 must use multifactor authentication" \
        in text(page)
    assert buttons(page) == ["Enroll in MFA"]
    assert "Not Now" not in text(page)
    assert step_reasons("mfa_offer", new_user.id) == ["enrollment_required"]


def test_new_account_cannot_reach_the_client_without_enrolling_even_by_editing_urls(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    offer = mfa.start(rp)
    pid = pending_id(offer)

    # Back to the pipeline directly: the offer again, never the client.
    again = mfa.http.get(f"/authorize/resume/{pid}")
    assert not at_client(again, rp)
    assert heading(mfa.go(again)) == OFFER
    # A new authorization request in the same (password-level) session: the offer again.
    verifier = mfa.verifier
    assert heading(mfa.go(mfa.authorize(rp))) == OFFER
    mfa.verifier = verifier
    # The later pages, opened before their turn, send the browser back to the offer.
    for path in ("enroll", "phone", "app", "passcode", "verify-email"):
        response = mfa.http.get(f"/mfa/{path}/{pid}")
        assert not at_client(response, rp), path
        assert heading(mfa.go(response)) == OFFER, path
    # A Not Now the page does not offer is not honoured: it starts the enrollment.
    page = mfa.post_form(offer, button="not_now")
    assert heading(page) == VERIFY_EMAIL
    assert not audit("mfa_not_now", new_user.id)
    [started] = audit("mfa_enrollment_started", new_user.id)
    assert started.detail["reason"] == "enrollment_required"

    # Enrolling: the factor pages stay closed until the email is verified.
    for path in ("enroll", "phone", "app", "passcode"):
        response = mfa.http.get(f"/mfa/{path}/{pid}")
        assert not at_client(response, rp), path
        assert heading(mfa.go(response)) == VERIFY_EMAIL, path
    response = mfa.http.post(f"/mfa/phone/{pid}", data={"phone": "(202) 555-0143"})
    assert not at_client(response, rp)
    assert not mfa.sms.requests and not factors_of(new_user.id)
    assert heading(mfa.go(mfa.http.get(f"/authorize/resume/{pid}"))) == VERIFY_EMAIL

    page = mfa.verify_email_yes(page)
    mfa.http.get(mfa.email_link())
    page = mfa.continue_after_link(page)
    assert heading(page) == CHOOSE
    # Still no way around the factor: resuming shows the method choice.
    response = mfa.http.get(f"/authorize/resume/{pid}")
    assert not at_client(response, rp)
    assert heading(mfa.go(response)) == CHOOSE

    page = mfa.choose_method(page, "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA


def test_a_password_alone_cannot_set_up_a_factor_by_opening_the_set_up_pages(
        mfa, old_user, cohort_rp):
    """An older account on the offer page opens the set-up pages by URL, forms and all:
    nothing is set up and nothing is sent; the offer is shown again."""
    rp, secret = cohort_rp
    offer = mfa.start(rp, "olga")
    pid = pending_id(offer)
    csrf = forms(offer.get_data(as_text=True))[0]["fields"]["csrf_token"]

    for path, data in (("enroll", {"method": "sms"}), ("enroll", {"method": "email"}),
                       ("phone", {"phone": "2025550143"}), ("app", {"passcode": "123456"}),
                       ("passcode", {"passcode": "123456"})):
        response = mfa.http.post(f"/mfa/{path}/{pid}",
                                 data={"csrf_token": csrf, "submit": "1", **data})
        assert not at_client(response, rp), path
        assert heading(mfa.go(response)) == OFFER, path

    assert not mfa.sms.requests and not mfa.mail.messages
    assert not factors_of(old_user.id)
    claims = mfa.id_token_claims(rp, secret, mfa.finish(mfa.not_now(offer)))
    assert claims["amr"] == ["pwd"] and claims["acr"] == ACR_PWD


def test_a_password_alone_cannot_replace_the_phone_of_an_enrolled_account(
        mfa, browser, new_user, cohort_rp):
    """At the challenge, with the password only, the phone and app set-up pages (also after
    asking for Modify MFA Options) add nothing: the challenge stays."""
    rp, secret = cohort_rp
    mfa.enroll_by_sms(rp, remember=False)
    other = browser()
    challenge = other.start(rp)
    assert heading(challenge) == CHALLENGE
    pid = pending_id(challenge)
    csrf = forms(challenge.get_data(as_text=True))[0]["fields"]["csrf_token"]
    other.http.get(f"/mfa/challenge/{pid}?modify=1")  # asked, not yet passed
    sent = len(mfa.sms.requests)

    for path, data in (("phone", {"phone": "(202) 555-0199"}), ("app", {"passcode": "123456"}),
                       ("modify", {"option": "phone"})):
        response = other.http.post(f"/mfa/{path}/{pid}",
                                   data={"csrf_token": csrf, "submit": "1", **data})
        assert not at_client(response, rp), path
        assert heading(other.go(response)) == CHALLENGE, path

    assert [m["to"] for m in mfa.sms_messages()[sent:]] in ([], [PHONE_E164])
    assert set(factors_of(new_user.id)) == {"sms"}
    assert factors_of(new_user.id)["sms"].destination == PHONE_E164
    page = other.submit_passcode(other.go(other.http.get(f"/mfa/challenge/{pid}")),
                                 other.sms_passcode(PHONE_E164))
    assert heading(page) == "Modify MFA Options"
    params = other.finish(other.post_form(page, {"cancel": "Cancel"}))
    claims = other.id_token_claims(rp, secret, params)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


# --- an older account: Not Now ------------------------------------------------------------


def test_old_account_not_now_is_audited_with_its_time_and_signs_in_at_password_level(
        mfa, old_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.start(rp, "olga")
    assert heading(page) == OFFER
    assert buttons(page) == ["Enroll in MFA", "Not Now"]
    assert step_reasons("mfa_offer", old_user.id) == ["enrollment_offer"]

    before = utcnow()
    params = mfa.finish(mfa.not_now(page))
    after = utcnow()

    [event] = audit("mfa_not_now", old_user.id)
    assert event.client_id == rp.client_id
    chosen_at = datetime.fromisoformat(event.detail["at"])
    assert before - timedelta(seconds=1) <= chosen_at <= after + timedelta(seconds=1)
    claims = mfa.id_token_claims(rp, secret, params)
    assert claims["acr"] == ACR_PWD
    assert claims["amr"] == ["pwd"]
    assert not factors_of(old_user.id)


def test_old_account_is_not_offered_again_on_a_single_sign_on_to_a_second_client(
        mfa, old_user, cohort_rp, informed):
    rp, _ = cohort_rp
    second, second_secret = informed
    mfa.finish(mfa.not_now(mfa.start(rp, "olga")))

    params = mfa.callback_params(mfa.follow(mfa.authorize(second)))

    claims = mfa.id_token_claims(second, second_secret, params)
    assert claims["acr"] == ACR_PWD and claims["amr"] == ["pwd"]
    assert step_reasons("mfa_offer", old_user.id) == ["enrollment_offer"]


def test_old_account_is_offered_again_at_a_later_sign_in_with_the_password_in_a_new_browser(
        mfa, browser, old_user, cohort_rp):
    rp, _ = cohort_rp
    mfa.finish(mfa.not_now(mfa.start(rp, "olga")))

    page = browser().start(rp, "olga")

    assert heading(page) == OFFER
    assert buttons(page) == ["Enroll in MFA", "Not Now"]
    assert step_reasons("mfa_offer", old_user.id) == ["enrollment_offer", "enrollment_offer"]


def test_old_account_is_offered_again_when_prompt_login_asks_the_password_again(
        mfa, old_user, cohort_rp):
    rp, secret = cohort_rp
    mfa.finish(mfa.not_now(mfa.start(rp, "olga")))

    page = mfa.start(rp, "olga", prompt="login")

    assert heading(page) == OFFER
    assert buttons(page) == ["Enroll in MFA", "Not Now"]
    params = mfa.finish(mfa.not_now(page))
    assert len(audit("mfa_not_now", old_user.id)) == 2
    assert mfa.id_token_claims(rp, secret, params)["amr"] == ["pwd"]


def test_old_account_that_chose_not_now_must_enroll_for_a_client_requiring_mfa(
        mfa, old_user, cohort_rp, strict_rp):
    rp, _ = cohort_rp
    strict, strict_secret = strict_rp
    mfa.finish(mfa.not_now(mfa.start(rp, "olga")))

    response = mfa.authorize(strict)  # the same SSO session
    assert not at_client(response, strict)
    page = mfa.go(response)

    assert heading(page) == OFFER
    assert buttons(page) == ["Enroll in MFA"]
    assert "requires multifactor authentication (MFA) for every account" in text(page)
    assert step_reasons("mfa_offer", old_user.id, strict.client_id) == ["client_policy"]
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(page))
    mfa.http.get(mfa.email_link(to="olga@example.com"))
    page = mfa.choose_method(mfa.continue_after_link(page), "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())
    claims = finish_enrollment(mfa, strict, strict_secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA


def test_old_account_that_chose_not_now_must_enroll_when_the_client_asks_for_the_mfa_level(
        mfa, old_user, cohort_rp):
    rp, secret = cohort_rp
    mfa.finish(mfa.not_now(mfa.start(rp, "olga")))

    page = mfa.go(mfa.authorize(rp, acr_values=ACR_MFA))

    assert heading(page) == OFFER
    assert buttons(page) == ["Enroll in MFA"]
    assert "asks for multifactor authentication (MFA) for this sign-in" in text(page)
    assert step_reasons("mfa_offer", old_user.id)[-1] == "acr_not_met"
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(page))
    mfa.http.get(mfa.email_link(to="olga@example.com"))
    page = mfa.choose_method(mfa.continue_after_link(page), "email")
    page = mfa.submit_passcode(page, mfa.email_passcode(to="olga@example.com"))
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA


def test_old_account_that_chooses_enroll_in_mfa_enrolls_like_a_new_one(
        mfa, old_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enroll_in_mfa(mfa.start(rp, "olga"))
    assert heading(page) == VERIFY_EMAIL
    [started] = audit("mfa_enrollment_started", old_user.id)
    assert started.detail["reason"] == "enrollment_offer"

    page = mfa.verify_email_yes(page)
    mfa.http.get(mfa.email_link(to="olga@example.com"))
    page = mfa.choose_method(mfa.continue_after_link(page), "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())

    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA
    assert not audit("mfa_not_now", old_user.id)


# --- Verify Your Email ----------------------------------------------------------------------


def test_verify_your_email_shows_the_account_email_and_yes_sends_the_link_to_it(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enroll_in_mfa(mfa.start(rp))

    assert heading(page) == VERIFY_EMAIL
    assert "Your account email address is: alice@example.com" in text(page)
    assert "Yes" in text(page) and "No, I'd like to change my email" in text(page)
    page = mfa.verify_email_yes(page)

    [message] = mfa.mail.messages
    assert message.rcpt_tos == ["alice@example.com"]
    assert message.message["Subject"] == "Verify your email address"
    assert "We sent a verification link to a****@example.com" in text(page)
    mfa.http.get(mfa.email_link(to="alice@example.com"))
    assert mfa_account(new_user.id).mfa_email == "alice@example.com"
    page = mfa.choose_method(mfa.continue_after_link(page), "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_another_email_gets_the_link_and_becomes_the_mfa_email_but_not_the_account_email(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enroll_in_mfa(mfa.start(rp))
    page = mfa.post_form(page, {"c-choice": "no", "c-submit": "Continue"}, prefix="c-")
    assert heading(page) == VERIFY_EMAIL
    assert "Email" in text(page) and buttons(page) == ["Send Email Link"]
    assert "does not change the email address of your account" in text(page)

    page = mfa.post_form(page, {"e-email": "recovery@example.org",
                                "e-submit": "Send Email Link"}, prefix="e-")

    assert [m.rcpt_tos for m in mfa.mail.messages] == [["recovery@example.org"]]
    assert "r*******@example.org" in text(page)
    mfa.http.get(mfa.email_link(to="recovery@example.org"))
    page = mfa.choose_method(mfa.continue_after_link(page), "email")
    code = mfa.email_passcode(to="recovery@example.org")
    assert "the email address r*******@example.org" in text(page)
    page = mfa.submit_passcode(page, code)
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"] and claims["acr"] == ACR_MFA

    account = mfa_account(new_user.id)
    assert account.mfa_email == "recovery@example.org"
    assert account.mfa_email_verified_at is not None
    assert factors_of(new_user.id)["email"].destination == "recovery@example.org"
    assert db.session.get(User, new_user.id).email == "alice@example.com"
    assert not emails_to(mfa, "alice@example.com")


@pytest.mark.parametrize("address, message", [
    ("not an email", "Enter an email address like name@example.com."),
    ("alice@localhost", "Enter an email address like name@example.com."),
    ("two@example.com, three@example.com", "Enter an email address like name@example.com."),
    ("", "Enter an email address."),
])
def test_a_bad_email_address_is_refused_with_the_error_next_to_the_field(
        mfa, new_user, cohort_rp, address, message):
    rp, secret = cohort_rp
    page = mfa.enroll_in_mfa(mfa.start(rp))
    page = mfa.post_form(page, {"c-choice": "no", "c-submit": "Continue"}, prefix="c-")

    page = mfa.post_form(page, {"e-email": address, "e-submit": "Send Email Link"},
                         prefix="e-")

    assert page.status_code == 200
    assert heading(page) == VERIFY_EMAIL
    assert field_error(page, "e-email") == message
    assert alert(page) == message
    assert field_value(page, "e-email") == address
    assert not mfa.mail.messages
    assert verified_mfa_email(new_user.id) is None
    # Corrected, the address gets its link and the enrollment goes on.
    page = mfa.post_form(page, {"e-email": "bob@example.org", "e-submit": "Send Email Link"},
                         prefix="e-")
    mfa.http.get(mfa.email_link(to="bob@example.org"))
    page = mfa.choose_method(mfa.continue_after_link(page), "email")
    page = mfa.submit_passcode(page, mfa.email_passcode(to="bob@example.org"))
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_the_email_link_works_once(mfa, new_user, cohort_rp):
    rp, _ = cohort_rp
    mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp)))
    link = mfa.email_link()

    assert heading(mfa.http.get(link)) == THANK_YOU
    again = mfa.http.get(link)

    assert again.status_code == 400
    assert heading(again) == "Link expired"
    assert "expired or was used already" in alert(again)
    assert rp.display_name in text(again)
    assert "Need help with MFA? Visit FAQs." in text(again)
    assert len(emails_to(mfa, "alice@example.com", THANK_YOU)) == 1


def test_an_expired_email_link_verifies_nothing_and_resend_gives_one_that_works(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp)))
    link = mfa.email_link()
    row = db.session.scalar(db.select(EmailVerification))
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()

    expired = mfa.http.get(link)

    assert expired.status_code == 400 and heading(expired) == "Link expired"
    assert verified_mfa_email(new_user.id) is None
    page = mfa.continue_after_link(page)
    assert heading(page) == VERIFY_EMAIL and "opened yet" in alert(page)
    page = mfa.resend(page)
    fresh = mfa.email_link()
    assert fresh != link
    assert heading(mfa.http.get(fresh)) == THANK_YOU
    page = mfa.choose_method(mfa.continue_after_link(page), "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_the_email_link_verifies_only_the_address_it_was_sent_to(mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.verify_email_change(mfa.enroll_in_mfa(mfa.start(rp)), "first@example.org")
    first = mfa.email_link(to="first@example.org")
    # The user changes their mind: a link to another address.
    page = mfa.go(mfa.http.get(f"/mfa/verify-email/{pending_id(page)}?change=1"))
    page = mfa.post_form(page, {"e-email": "second@example.org",
                                "e-submit": "Send Email Link"}, prefix="e-")
    second = mfa.email_link(to="second@example.org")

    # The newer link revoked the first one: it verifies nothing.
    stale = mfa.http.get(first)
    assert stale.status_code == 400 and heading(stale) == "Link expired"
    assert verified_mfa_email(new_user.id) is None
    waiting = mfa.continue_after_link(page)
    assert heading(waiting) == VERIFY_EMAIL and "opened yet" in alert(waiting)
    forged = link_token(second)[:-2] + ("AA" if not link_token(second).endswith("AA") else "BB")
    refused = mfa.http.get("/mfa/email-link?token=" + forged)
    assert refused.status_code == 400 and heading(refused) == "Link expired"
    assert "Need help with MFA? Visit FAQs." in text(refused)

    mfa.http.get(second)
    assert mfa_account(new_user.id).mfa_email == "second@example.org"
    page = mfa.choose_method(mfa.continue_after_link(waiting), "email")
    page = mfa.submit_passcode(page, mfa.email_passcode(to="second@example.org"))
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_the_email_link_has_at_least_128_random_bits_and_is_stored_only_as_a_digest(
        app, mfa, new_user, cohort_rp):
    rp, _ = cohort_rp
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp)))
    first = link_token(mfa.email_link())
    mfa.resend(page)
    second = link_token(mfa.email_link())

    for token in (first, second):
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) * 8 >= 128
    assert first != second
    rows = list(db.session.scalars(db.select(EmailVerification).order_by(EmailVerification.id)))
    assert [r.token_digest for r in rows] == [digest(first), digest(second)]
    stored = database_bytes(app)
    assert first.encode() not in stored and second.encode() not in stored


def test_opening_the_link_thanks_the_user_sends_a_confirmation_and_continue_goes_on(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp)))

    thanks = mfa.http.get(mfa.email_link())

    assert thanks.status_code == 200
    assert heading(thanks) == THANK_YOU
    [confirmation] = emails_to(mfa, "alice@example.com", THANK_YOU)
    assert "Thank you for verifying your email" in confirmation.text
    # This browser started the sign-in: its Continue goes on to the methods.
    page = mfa.continue_after_link(thanks)
    assert heading(page) == CHOOSE
    page = mfa.submit_passcode(mfa.enter_phone(mfa.choose_method(page, "sms")),
                               mfa.sms_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_the_link_opened_in_another_browser_verifies_without_signing_that_browser_in(
        mfa, browser, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp)))
    phone = browser()

    thanks = phone.http.get(mfa.email_link())

    assert thanks.status_code == 200 and heading(thanks) == THANK_YOU
    assert "This window is not signed in" in text(thanks)
    assert not forms(thanks.get_data(as_text=True))  # no Continue here
    assert mfa_account(new_user.id).mfa_email == "alice@example.com"
    assert emails_to(mfa, "alice@example.com", THANK_YOU)
    # That browser has no session: the client's sign-in there asks for the password…
    assert heading(phone.go(phone.authorize(rp))) == "Sign In"
    # …and the sign-in under way belongs to the first browser only.
    assert heading(phone.go(phone.http.get(f"/mfa/enroll/{pending_id(page)}"))) == \
        "Sign-in started elsewhere"
    # Continue in the original browser goes on.
    page = mfa.continue_after_link(page)
    assert heading(page) == CHOOSE
    page = mfa.submit_passcode(mfa.enter_phone(mfa.choose_method(page, "sms")),
                               mfa.sms_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_continue_before_the_link_was_opened_says_it_has_not_been_opened_yet(
        mfa, new_user, cohort_rp):
    rp, _ = cohort_rp
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp)))

    page = mfa.continue_after_link(page)

    assert heading(page) == VERIFY_EMAIL
    assert alert(page) == ("We haven't seen the link opened yet. Open the link in the "
                                "email we sent, then select Continue.")
    assert verified_mfa_email(new_user.id) is None
    assert heading(mfa.go(mfa.http.get(f"/authorize/resume/{pending_id(page)}"))) == \
        VERIFY_EMAIL


# --- SMS ----------------------------------------------------------------------------------


def test_sms_enrollment_pages_use_the_documented_labels(mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.choose_method(to_methods(mfa, rp), "sms")

    assert heading(page) == PHONE_PAGE
    assert '<label for="phone">Phone Number</label>' in page.get_data(as_text=True)
    assert buttons(page) == ["Send Passcode"]
    page = mfa.enter_phone(page)
    assert heading(page) == CHALLENGE
    assert "Please enter the passcode sent to the phone number ***-***-0143" in text(page)
    assert '<label for="passcode">Passcode</label>' in page.get_data(as_text=True)
    assert buttons(page) == ["Submit", "Resend"]
    assert "Remember this device" in text(page)
    claims = finish_enrollment(mfa, rp, secret, mfa.submit_passcode(page, mfa.sms_passcode()))
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


@pytest.mark.parametrize("typed", ["(202) 555-0143", "202-555-0143", "+1 202 555 0143",
                                   "2025550143", "202.555.0143", "1-202-555-0143"])
def test_the_usual_spellings_of_a_us_number_are_accepted_and_sent_as_e164(
        mfa, new_user, cohort_rp, typed):
    rp, secret = cohort_rp
    page = mfa.enter_phone(mfa.choose_method(to_methods(mfa, rp), "sms"), typed)

    assert heading(page) == CHALLENGE
    [message] = mfa.sms_messages()
    assert message["to"] == PHONE_E164
    page = mfa.submit_passcode(page, mfa.sms_passcode(PHONE_E164))
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA
    assert factors_of(new_user.id)["sms"].destination == PHONE_E164


@pytest.mark.parametrize("typed, message", [
    ("+44 20 7946 0958", "Only US phone numbers are accepted; international numbers cannot "
                         "receive passcodes."),
    ("011 44 20 7946 0958", "Only US phone numbers are accepted; international numbers "
                            "cannot receive passcodes."),
    ("+1 416 555 0143", "Only US phone numbers are accepted; Canadian and other international "
                        "numbers cannot receive passcodes."),
    ("(800) 555-0143", "Toll-free numbers cannot receive passcodes. Enter a mobile number."),
])
def test_international_and_toll_free_numbers_are_refused_next_to_the_field_and_nothing_is_sent(
        mfa, new_user, cohort_rp, typed, message):
    rp, secret = cohort_rp
    page = mfa.enter_phone(mfa.choose_method(to_methods(mfa, rp), "sms"), typed)

    assert page.status_code == 200
    assert heading(page) == PHONE_PAGE
    assert field_error(page, "phone") == message
    assert alert(page) == message
    assert field_value(page, "phone") == typed
    assert not mfa.sms.requests
    assert db.session.scalar(db.select(Passcode.id)) is None
    assert not factors_of(new_user.id)
    page = mfa.enter_phone(page, "(202) 555-0143")
    claims = finish_enrollment(mfa, rp, secret, mfa.submit_passcode(page, mfa.sms_passcode()))
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_the_number_is_shown_masked_on_the_challenge_of_a_later_sign_in(
        mfa, browser, new_user, cohort_rp):
    rp, secret = cohort_rp
    mfa.enroll_by_sms(rp, remember=False)
    later = browser()

    page = later.start(rp)

    assert heading(page) == CHALLENGE
    assert "Please enter the passcode sent to the phone number ***-***-0143" in text(page)
    html = page.get_data(as_text=True)
    assert "555-0143" not in html and "5550143" not in html and "555 0143" not in html
    params = later.finish(later.submit_passcode(page, later.sms_passcode()))
    claims = later.id_token_claims(rp, secret, params)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_enter_a_different_number_sends_a_new_code_there_and_the_first_code_dies(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enter_phone(mfa.choose_method(to_methods(mfa, rp), "sms"), "(202) 555-0143")
    first_code = mfa.sms_passcode(PHONE_E164)

    page = mfa.click(page, "Enter a different number")
    assert heading(page) == PHONE_PAGE
    page = mfa.enter_phone(page, "202-555-0199")

    assert "***-***-0199" in text(page)
    new_code = mfa.sms_passcode("+12025550199")
    if first_code != new_code:
        refused = mfa.submit_passcode(page, first_code)
        assert heading(refused) == CHALLENGE and alert(refused)
    page = mfa.submit_passcode(page, new_code)
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA
    assert factors_of(new_user.id)["sms"].destination == "+12025550199"


def test_resend_sends_a_new_code_and_the_old_one_no_longer_works(mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enter_phone(mfa.choose_method(to_methods(mfa, rp), "sms"))
    old = mfa.sms_passcode()
    for _ in range(3):  # a new code could, once in a million, repeat the old one
        page = mfa.resend(page)
        new = mfa.sms_passcode()
        if new != old:
            break

    assert len(sms_to(mfa, PHONE_E164)) >= 2
    assert heading(page) == CHALLENGE
    assert "We sent a new passcode to the phone number ***-***-0143" in text(page)
    refused = mfa.submit_passcode(page, old)
    assert heading(refused) == CHALLENGE
    assert alert(refused) == "The passcode you entered is not correct. Check it and try again."
    assert not factors_of(new_user.id)
    claims = finish_enrollment(mfa, rp, secret, mfa.submit_passcode(refused, new))
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


# --- email --------------------------------------------------------------------------------


def test_email_enrollment_sends_the_documented_passcode_email_to_the_verified_mfa_email(
        mfa, new_user, cns):
    rp, secret = cns
    page = mfa.choose_method(to_methods(mfa, rp), "email")

    assert heading(page) == CHALLENGE
    assert "Please enter the passcode sent to the email address a****@example.com" in text(page)
    [message] = emails_to(mfa, "alice@example.com", "Your one-time passcode")
    code = mfa.email_passcode(to="alice@example.com")
    assert message.text.splitlines()[0] == (
        f"This is your one-time passcode: {code}. For security reasons, this code will expire "
        f"in 5 minutes. If you did not take this action, please contact {CNS_HELP}.")
    claims = finish_enrollment(mfa, rp, secret, mfa.submit_passcode(page, code))
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA
    assert factors_of(new_user.id)["email"].destination == "alice@example.com"


def test_an_email_passcode_does_not_meet_the_aal2_alias(mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.choose_method(to_methods(mfa, rp, acr_values=ACR_AAL2), "email")
    page = mfa.submit_passcode(page, mfa.email_passcode())

    params = mfa.finish(mfa.continue_from_recovery_codes(page))

    claims = mfa.id_token_claims(rp, secret, params)
    assert claims["acr"] == ACR_MFA
    assert claims["acr"] != ACR_AAL2
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"]


def test_enrollment_offers_only_aal2_factors_when_aal2_is_essential(mfa, new_user, cohort_rp):
    rp, _ = cohort_rp
    claims_param = json.dumps({"id_token": {"acr": {"essential": True, "values": [ACR_AAL2]}}})
    page = to_methods(mfa, rp, claims=claims_param)

    html = page.get_data(as_text=True)
    assert heading(page) == "Choose Your MFA Method"
    assert 'value="sms"' in html and 'value="totp"' in html
    assert 'value="email"' not in html


def test_an_sms_passcode_meets_the_aal2_alias_when_asked(mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enter_phone(mfa.choose_method(to_methods(mfa, rp, acr_values=ACR_AAL2), "sms"))

    claims = finish_enrollment(mfa, rp, secret, mfa.submit_passcode(page, mfa.sms_passcode()))

    assert claims["acr"] == ACR_AAL2
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"]


# --- an authentication app ------------------------------------------------------------------


def test_app_enrollment_shows_a_qr_code_and_the_secret_and_a_code_from_it_confirms(
        app, mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.choose_method(to_methods(mfa, rp), "totp")

    assert heading(page) == APP_PAGE
    html = page.get_data(as_text=True)
    assert re.search(r'<div class="qr"[^>]*>\s*<svg', html)
    key = totp_secret(page)
    assert len(key) >= 32
    valid = {pyotp.TOTP(key).at(datetime.now(), counter_offset=o) for o in (-1, 0, 1)}
    wrong = next(c for c in ("000000", "111111", "123456", "654321") if c not in valid)
    refused = mfa.submit_passcode(page, wrong)
    assert heading(refused) == APP_PAGE
    assert "not correct" in alert(refused)
    assert not factors_of(new_user.id)

    page = mfa.submit_passcode(refused, pyotp.TOTP(key).now())

    claims = finish_enrollment(mfa, rp, secret, page)
    assert "otp" in claims["amr"] and "swk" in claims["amr"]
    assert claims["amr"] == ["pwd", "otp", "swk", "mfa"]
    assert claims["acr"] == ACR_MFA
    row = factors_of(new_user.id)["totp"]
    assert row.secret_encrypted and row.secret_encrypted != key
    assert decrypt(row.secret_encrypted) == key
    assert key.encode() not in database_bytes(app)


def test_no_page_showing_a_secret_or_a_passcode_form_may_be_cached(mfa, new_user, cohort_rp):
    rp, _ = cohort_rp
    sign_in = mfa.http.get(mfa.authorize(rp).headers["Location"])
    assert sign_in.headers["Cache-Control"] == "no-store"  # the password form
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(mfa.start(rp)))
    assert page.headers["Cache-Control"] == "no-store"
    thanks = mfa.http.get(mfa.email_link())
    assert thanks.headers["Cache-Control"] == "no-store"
    methods = mfa.continue_after_link(page)
    app_page = mfa.choose_method(methods, "totp")
    assert heading(app_page) == "Set Up Your Authentication App"
    assert app_page.headers["Cache-Control"] == "no-store"  # the key and its QR code
    phone = mfa.go(mfa.http.get(f"/mfa/phone/{pending_id(app_page)}"))
    passcode = mfa.enter_phone(phone)
    assert heading(passcode) == "Multifactor Authentication (MFA)"
    assert passcode.headers["Cache-Control"] == "no-store"


# --- recovery codes -----------------------------------------------------------------------


def test_ten_recovery_codes_are_shown_once_after_the_first_enrollment_and_stored_as_digests(
        app, mfa, browser, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enter_phone(mfa.choose_method(to_methods(mfa, rp), "sms"))
    page = mfa.submit_passcode(page, mfa.sms_passcode(), remember=False)

    assert heading(page) == RECOVERY
    assert page.headers["Cache-Control"] == "no-store"
    codes = mfa.recovery_codes(page)
    assert len(codes) == 10 and len(set(codes)) == 10
    db.session.expire_all()
    rows = list(db.session.scalars(db.select(RecoveryCode).filter_by(user_id=new_user.id)))
    assert sorted(r.code_digest for r in rows) == sorted(digest(c.replace("-", ""))
                                                         for c in codes)
    stored = database_bytes(app)
    for code in codes:
        assert code.encode() not in stored and code.replace("-", "").encode() not in stored

    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA
    # Never shown again: not on a later sign-in with the challenge.
    later = browser()
    page = later.submit_passcode(later.start(rp), later.sms_passcode())
    assert heading(page) != RECOVERY
    assert not any(code in page.get_data(as_text=True) for code in codes)
    assert later.callback_params(later.follow(page))["code"]


# --- notices ------------------------------------------------------------------------------


def test_a_notice_arrives_at_the_mfa_email_after_enrollment(mfa, new_user, cns):
    rp, secret = cns
    page = mfa.verify_email_change(mfa.enroll_in_mfa(mfa.start(rp)), "recovery@example.org")
    mfa.http.get(mfa.email_link(to="recovery@example.org"))
    page = mfa.enter_phone(mfa.choose_method(mfa.continue_after_link(page), "sms"))
    page = mfa.submit_passcode(page, mfa.sms_passcode())

    [notice] = emails_to(mfa, "recovery@example.org",
                         "A sign-in method was added to your account")
    assert "SMS was added as a multifactor authentication method" in notice.text
    assert CNS_HELP in notice.text
    assert [e.detail["factor"] for e in audit("mfa_factor_added", new_user.id)] == ["sms"]
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


# --- the client's name and help on every page ----------------------------------------------


def assert_branded(page, rp):
    """The page names the client and offers the FAQ of that client."""
    assert page.status_code == 200, (page.status_code, heading(page))
    assert rp.display_name in text(page), heading(page)
    assert "Need help with MFA? Visit FAQs." in text(page), heading(page)
    assert f'href="/mfa/faq?client_id={rp.client_id}"' in page.get_data(as_text=True)


def test_every_enrollment_page_names_the_client_and_links_to_its_faq(
        mfa, browser, new_user, cns):
    rp, secret = cns
    seen = []

    def check(page):
        assert_branded(page, rp)
        seen.append(heading(page))
        return page

    offer = check(mfa.start(rp))
    choice = check(mfa.enroll_in_mfa(offer))
    check(mfa.post_form(choice, {"c-choice": "no", "c-submit": "Continue"}, prefix="c-"))
    waiting = check(mfa.verify_email_yes(choice))
    check(mfa.continue_after_link(waiting))  # not opened yet
    link = mfa.email_link()
    check(browser().http.get(link))  # opened elsewhere: still this client's page
    methods = check(mfa.continue_after_link(waiting))
    check(mfa.choose_method(methods, "totp"))
    phone = check(mfa.choose_method(methods, "sms"))
    check(mfa.enter_phone(phone, "+44 20 7946 0958"))
    passcode = check(mfa.enter_phone(phone))
    codes = check(mfa.submit_passcode(passcode, mfa.sms_passcode()))
    faq = check(mfa.click(codes, "Visit FAQs."))

    assert seen == [OFFER, VERIFY_EMAIL, VERIFY_EMAIL, VERIFY_EMAIL, VERIFY_EMAIL, THANK_YOU,
                    CHOOSE, APP_PAGE, PHONE_PAGE, PHONE_PAGE, CHALLENGE, RECOVERY,
                    "MFA: Frequently Asked Questions"]
    assert CNS_HELP in text(faq)
    claims = finish_enrollment(mfa, rp, secret, codes)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_the_faq_shows_the_help_contact_of_the_client_the_user_came_from(
        client, cns, informed):
    rp, _ = cns
    other, _ = informed

    cns_faq = client.get(f"/mfa/faq?client_id={rp.client_id}")
    informed_faq = client.get(f"/mfa/faq?client_id={other.client_id}")

    assert CNS_HELP in text(cns_faq) and other.help_contact not in text(cns_faq)
    assert other.help_contact in text(informed_faq) and CNS_HELP not in text(informed_faq)
    assert "Need help with MFA? Visit FAQs." in text(cns_faq)


@pytest.mark.parametrize("client_id", ["%00", "rp%00x", "x" * 5000, "' OR '1'='1"])
def test_the_faq_with_a_client_id_that_is_no_client_shows_the_general_page(client, cns,
                                                                          client_id):
    response = client.get(f"/mfa/faq?client_id={client_id}")

    assert response.status_code == 200
    assert "MFA: Frequently Asked Questions" in text(response)
    assert CNS_HELP not in text(response)


# --- delivery failures ----------------------------------------------------------------------


def test_an_sms_that_cannot_be_sent_says_what_to_do_and_keeps_the_progress(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    phone_page = mfa.choose_method(to_methods(mfa, rp), "sms")
    mfa.sms.respond(503)

    page = mfa.enter_phone(phone_page)

    assert heading(page) == PHONE_PAGE
    assert "couldn't send the text message" in alert(page)
    assert "Nothing you have done so far is lost" in alert(page)
    assert field_value(page, "phone") == "(202) 555-0143"
    assert "Choose another method" in text(page)
    assert len(mfa.sms.requests) == 1
    assert not factors_of(new_user.id)
    # The code that never arrived is not kept as one "already sent".
    db.session.expire_all()
    assert db.session.scalar(db.select(Passcode.id).where(Passcode.revoked_at.is_(None))) is None
    # The verified email is kept: the sign-in resumes at the method choice.
    assert mfa_account(new_user.id).mfa_email_verified_at is not None
    resumed = mfa.go(mfa.http.get(f"/authorize/resume/{pending_id(page)}"))
    assert heading(resumed) == CHOOSE

    mfa.sms.respond(200)
    page = mfa.enter_phone(page)
    assert heading(page) == CHALLENGE
    claims = finish_enrollment(mfa, rp, secret, mfa.submit_passcode(page, mfa.sms_passcode()))
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_an_sms_that_cannot_be_sent_leaves_the_way_to_another_method(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    mfa.sms.respond(503)
    page = mfa.enter_phone(mfa.choose_method(to_methods(mfa, rp), "sms"))
    assert "couldn't send the text message" in alert(page)

    page = mfa.choose_method(mfa.click(page, "Choose another method"), "email")

    page = mfa.submit_passcode(page, mfa.email_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_a_verification_link_the_mail_server_refuses_says_so_and_a_retry_works(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    page = mfa.enroll_in_mfa(mfa.start(rp))
    mfa.mail.handler.rcpt_reply = "550 5.1.1 mailbox unavailable"

    page = mfa.verify_email_yes(page)

    assert heading(page) == VERIFY_EMAIL
    assert "couldn't send the email to a****@example.com" in alert(page)
    assert "use a different email address" in alert(page)
    assert "We sent a verification link" not in text(page)
    assert not mfa.mail.messages

    mfa.mail.handler.rcpt_reply = None
    page = mfa.verify_email_yes(page)
    assert "We sent a verification link to a****@example.com" in text(page)
    mfa.http.get(mfa.email_link())
    page = mfa.choose_method(mfa.continue_after_link(page), "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "sms", "otp", "mfa"] and claims["acr"] == ACR_MFA


def test_an_email_passcode_the_mail_server_refuses_says_so_and_keeps_the_verified_email(
        mfa, new_user, cohort_rp):
    rp, secret = cohort_rp
    methods = to_methods(mfa, rp)
    mfa.mail.handler.rcpt_reply = "550 5.1.1 mailbox unavailable"

    page = mfa.choose_method(methods, "email")

    assert heading(page) == CHOOSE
    assert "couldn't send the email" in alert(page)
    assert "choose another method" in alert(page)
    assert mfa_account(new_user.id).mfa_email_verified_at is not None
    assert not emails_to(mfa, "alice@example.com", "Your one-time passcode")

    mfa.mail.handler.rcpt_reply = None
    page = mfa.choose_method(page, "email")
    assert heading(page) == CHALLENGE
    page = mfa.submit_passcode(page, mfa.email_passcode())
    claims = finish_enrollment(mfa, rp, secret, page)
    assert claims["amr"] == ["pwd", "email", "otp", "mfa"] and claims["acr"] == ACR_MFA
