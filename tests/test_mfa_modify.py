"""Modify MFA Options: reached from the challenge only after passing it; Cancel finishes the
sign-in; a new phone gets a passcode, a new MFA email a link; notices go to the old
contacts; nothing is half-changed when a step fails."""

from __future__ import annotations

import html
import re
import time

import pyotp
import pytest

from idp.extensions import db
from idp.models import User
from plugins.mfa.models import MfaAccount, MfaFactor, RecoveryCode, RememberedDevice
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    MASKED_PHONE,
    PHONE_E164,
    age_send_counters,
    age_session_events,
    e164,
    enroll_by_email,
    wrong,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import ACR_MFA, heading
from tests.mfa_support import alert_text as escaped_alert

NEW_PHONE = "(202) 555-0199"
NEW_PHONE_E164 = "+12025550199"
NEW_PHONE_MASKED = "***-***-0199"
MODIFY = "Modify MFA Options"
NEW_MFA_EMAIL = "alice.mfa@example.org"


# --- helpers -----------------------------------------------------------------------------


def alert_text(page) -> str:
    return html.unescape(escaped_alert(page))


def csrf_token(mfa, pid) -> str:
    page = mfa.http.get(f"/mfa/challenge/{pid}")
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                     page.get_data(as_text=True)).group(1)


def pending_id(page) -> str:
    return page.request.path.rstrip("/").rsplit("/", 1)[-1]


def challenge(mfa, rp):
    """A sign-in from a browser the IdP has not seen: the challenge page."""
    page = mfa.start(rp)
    assert heading(page) == CHALLENGE, heading(page)
    return page


def modify_page(mfa, rp, to=PHONE_E164):
    """Modify MFA Options from the challenge, passing the challenge by SMS."""
    page = mfa.click(challenge(mfa, rp), MODIFY)
    page = mfa.submit_passcode(page, mfa.sms_passcode(to=to))
    assert heading(page) == MODIFY, heading(page)
    return page


def choose(mfa, page, option):
    return mfa.post_form(page, {"option": option, "submit": "Continue"})


def cancel(mfa, page):
    return mfa.post_form(page, {"cancel": "Cancel"})


def radio_labels(page) -> list[str]:
    html = page.get_data(as_text=True)
    return [label.strip() for label in re.findall(
        r'<input[^>]*type="radio"[^>]*>\s*<label[^>]*>([^<]*)</label>', html)]


def sms_factor(user) -> MfaFactor:
    db.session.expire_all()
    return db.session.scalar(db.select(MfaFactor).filter_by(user_id=user.id, kind="sms"))


def texts_to(mfa, number: str) -> list[str]:
    return [m["body"] for m in mfa.sms_messages() if m["to"] == number]


def emails_to(mfa, address: str) -> list:
    return [m for m in mfa.mail.messages if address in m.rcpt_tos]


def live_devices(user) -> list[RememberedDevice]:
    db.session.expire_all()
    return list(db.session.scalars(db.select(RememberedDevice).filter_by(
        user_id=user.id, forgotten_at=None)))


def change_phone(mfa, rp, number=NEW_PHONE):
    """Modify → Phone → the new number: the passcode page for it."""
    page = mfa.enter_phone(choose(mfa, modify_page(mfa, rp), "phone"), number)
    assert heading(page) == CHALLENGE, heading(page)
    return page


# --- reaching the Modify page ------------------------------------------------------------


def test_modify_mfa_options_is_a_link_on_the_challenge_and_the_passcode_is_still_required(
        mfa, enrolled, cohort_rp):
    page = challenge(mfa, cohort_rp[0])
    assert re.search(r'<a [^>]*href="[^"]*modify=1[^"]*"[^>]*>\s*Modify MFA Options',
                     page.get_data(as_text=True))
    page = mfa.click(page, MODIFY)
    assert heading(page) == CHALLENGE
    assert "Please enter the passcode sent to the phone number " + MASKED_PHONE in (
        page.get_data(as_text=True))
    page = mfa.submit_passcode(page, wrong(mfa.sms_passcode()))
    assert heading(page) == CHALLENGE
    assert "not correct" in alert_text(page)


def test_submit_after_modify_mfa_options_leads_to_the_modify_page_with_phone_email_continue_cancel(
        mfa, enrolled, cohort_rp):
    page = modify_page(mfa, cohort_rp[0])
    labels = radio_labels(page)
    assert "Phone" in labels and "Email" in labels, labels
    html = page.get_data(as_text=True)
    assert 'value="Continue"' in html and 'value="Cancel"' in html


def test_cancel_on_the_modify_page_finishes_the_sign_in_with_the_factor_that_was_passed(
        mfa, enrolled, cohort_rp):
    rp, secret = cohort_rp
    params = mfa.finish(cancel(mfa, modify_page(mfa, rp)))
    assert "code" in params, params
    claims = mfa.id_token_claims(rp, secret, params)
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA
    assert sms_factor(enrolled.user).destination == PHONE_E164


def test_the_modify_page_cannot_be_reached_by_its_url_before_the_challenge_is_passed(
        mfa, enrolled, cohort_rp):
    page = challenge(mfa, cohort_rp[0])
    pid = pending_id(page)
    assert heading(mfa.go(mfa.http.get(f"/mfa/modify/{pid}"))) == CHALLENGE
    # Asking for Modify MFA Options is not passing the challenge either.
    mfa.click(page, MODIFY)
    assert heading(mfa.go(mfa.http.get(f"/mfa/modify/{pid}"))) == CHALLENGE
    forged = mfa.http.post(f"/mfa/modify/{pid}", data={
        "csrf_token": csrf_token(mfa, pid), "option": "recovery", "submit": "Continue"})
    assert heading(mfa.go(forged)) == CHALLENGE
    forged = mfa.http.post(f"/mfa/modify/{pid}", data={
        "csrf_token": csrf_token(mfa, pid), "cancel": "Cancel"})
    assert heading(mfa.go(forged)) == CHALLENGE


@pytest.mark.parametrize("page", ["phone", "app", "modify-email", "verify-email", "enroll"])
def test_set_up_pages_cannot_change_the_factors_of_an_account_that_has_not_passed_the_challenge(
        mfa, enrolled, cohort_rp, page):
    pid = pending_id(challenge(mfa, cohort_rp[0]))
    mfa.click(mfa.http.get(f"/mfa/challenge/{pid}"), MODIFY)
    reached = mfa.go(mfa.http.get(f"/mfa/{page}/{pid}"))
    assert heading(reached) == CHALLENGE, (page, heading(reached))


def test_a_new_phone_number_cannot_be_set_by_posting_to_the_phone_page_without_the_challenge(
        mfa, enrolled, cohort_rp):
    pid = pending_id(challenge(mfa, cohort_rp[0]))
    mfa.click(mfa.http.get(f"/mfa/challenge/{pid}"), MODIFY)
    mfa.go(mfa.http.post(f"/mfa/phone/{pid}", data={
        "csrf_token": csrf_token(mfa, pid), "phone": NEW_PHONE, "submit": "Send Passcode"}))
    assert texts_to(mfa, NEW_PHONE_E164) == []
    assert sms_factor(enrolled.user).destination == PHONE_E164


# --- a new phone ---------------------------------------------------------------------------


def test_modify_phone_sends_the_passcode_to_the_new_number(mfa, enrolled, cohort_rp):
    page = choose(mfa, modify_page(mfa, cohort_rp[0]), "phone")
    assert heading(page) == "Verify Your Phone Number"
    page = mfa.enter_phone(page, NEW_PHONE)
    assert heading(page) == CHALLENGE
    assert NEW_PHONE_MASKED in page.get_data(as_text=True)
    assert re.fullmatch(r"\d{6}", mfa.sms_passcode(to=NEW_PHONE_E164))
    # Until that passcode is entered, passcodes still go to the old number.
    assert sms_factor(enrolled.user).destination == PHONE_E164


def test_modify_phone_changes_the_factor_notifies_the_old_contacts_and_forgets_devices(
        mfa, enrolled, cohort_rp, browser):
    rp, secret = cohort_rp
    user = enrolled.user
    other = browser()
    other.submit_passcode(challenge(other, rp), other.sms_passcode(), remember=True)
    assert live_devices(user)
    age_send_counters(3600)
    page = change_phone(mfa, rp)
    params = mfa.finish(mfa.submit_passcode(page, mfa.sms_passcode(to=NEW_PHONE_E164),
                                            remember=False))
    assert "code" in params, params
    assert sms_factor(user).destination == NEW_PHONE_E164
    notices = [text for text in texts_to(mfa, PHONE_E164) if "passcode" not in text]
    assert len(notices) == 1 and "phone number" in notices[0] and "changed" in notices[0], (
        notices)
    notice = emails_to(mfa, "alice@example.com")[-1]
    assert "phone number" in notice.text and NEW_PHONE_MASKED in notice.text
    assert live_devices(user) == []
    # The browser that was remembered is challenged again, at the new number.
    age_send_counters(3600)
    age_session_events(user.id, 60)
    page = other.start(rp, prompt="login")
    assert heading(page) == CHALLENGE
    assert f"Please enter the passcode sent to the phone number {NEW_PHONE_MASKED}" in (
        page.get_data(as_text=True))
    assert texts_to(mfa, NEW_PHONE_E164)[-1] != notices[0]
    claims = mfa.id_token_claims(rp, secret, params)
    assert {"pwd", "sms", "otp", "mfa"} <= set(claims["amr"])


def test_the_next_challenge_names_the_new_masked_number(mfa, enrolled, cohort_rp, browser):
    rp = cohort_rp[0]
    mfa.finish(mfa.submit_passcode(change_phone(mfa, rp), mfa.sms_passcode(to=NEW_PHONE_E164)))
    age_send_counters(3600)
    page = challenge(browser(), rp)
    text = page.get_data(as_text=True)
    assert f"Please enter the passcode sent to the phone number {NEW_PHONE_MASKED}" in text
    assert MASKED_PHONE not in text


def test_resend_sends_a_new_passcode_to_the_new_number_and_the_old_one_dies(
        mfa, enrolled, cohort_rp):
    page = change_phone(mfa, cohort_rp[0])
    first = mfa.sms_passcode(to=NEW_PHONE_E164)
    page = mfa.resend(page)
    assert heading(page) == CHALLENGE
    second = mfa.sms_passcode(to=NEW_PHONE_E164)
    assert len(texts_to(mfa, NEW_PHONE_E164)) == 2
    if first == second:
        pytest.skip("the two random passcodes happen to be equal")
    refused = mfa.submit_passcode(page, first)
    assert heading(refused) == CHALLENGE and "not correct" in alert_text(refused)
    mfa.finish(mfa.submit_passcode(page, second))
    assert sms_factor(enrolled.user).destination == NEW_PHONE_E164


def test_enter_a_different_number_sends_to_that_number_instead(mfa, enrolled, cohort_rp):
    page = change_phone(mfa, cohort_rp[0])
    page = mfa.click(page, "Enter a different number")
    assert heading(page) == "Verify Your Phone Number"
    page = mfa.enter_phone(page, "202-555-0177")
    assert "***-***-0177" in page.get_data(as_text=True)
    mfa.finish(mfa.submit_passcode(page, mfa.sms_passcode(to="+12025550177")))
    assert sms_factor(enrolled.user).destination == "+12025550177"


def test_an_international_number_is_refused_and_nothing_changes(mfa, enrolled, cohort_rp):
    page = choose(mfa, modify_page(mfa, cohort_rp[0]), "phone")
    sent = len(mfa.sms.requests)
    page = mfa.enter_phone(page, "+44 20 7946 0958")
    assert heading(page) == "Verify Your Phone Number"
    assert "Only US phone numbers are accepted" in alert_text(page)
    assert len(mfa.sms.requests) == sent
    assert sms_factor(enrolled.user).destination == PHONE_E164


# --- nothing half-changed -------------------------------------------------------------------


def test_a_failed_send_to_the_new_phone_keeps_the_old_one_and_the_user_can_retry(
        mfa, enrolled, cohort_rp):
    page = choose(mfa, modify_page(mfa, cohort_rp[0]), "phone")
    mfa.sms.respond(503)
    page = mfa.enter_phone(page, NEW_PHONE)
    assert heading(page) == "Verify Your Phone Number"
    assert "couldn't send" in alert_text(page)
    assert sms_factor(enrolled.user).destination == PHONE_E164
    mfa.sms.respond(200)
    page = mfa.enter_phone(page, NEW_PHONE)
    assert heading(page) == CHALLENGE
    mfa.finish(mfa.submit_passcode(page, mfa.sms_passcode(to=NEW_PHONE_E164)))
    assert sms_factor(enrolled.user).destination == NEW_PHONE_E164


def test_after_a_failed_send_to_the_new_phone_cancel_finishes_with_the_old_phone(
        mfa, enrolled, cohort_rp, browser):
    rp, secret = cohort_rp
    page = choose(mfa, modify_page(mfa, rp), "phone")
    mfa.sms.respond(503)
    page = mfa.enter_phone(page, NEW_PHONE)
    mfa.sms.respond(200)
    params = mfa.finish(mfa.post_form(page, {"cancel": "Cancel"}, index=1))
    assert "code" in params, params
    assert mfa.id_token_claims(rp, secret, params)["acr"] == ACR_MFA
    assert sms_factor(enrolled.user).destination == PHONE_E164
    age_send_counters(3600)
    assert MASKED_PHONE in challenge(browser(), rp).get_data(as_text=True)


def test_a_wrong_passcode_for_the_new_phone_keeps_the_old_one(mfa, enrolled, cohort_rp,
                                                               browser):
    rp = cohort_rp[0]
    page = change_phone(mfa, rp)
    page = mfa.submit_passcode(page, wrong(mfa.sms_passcode(to=NEW_PHONE_E164)))
    assert heading(page) == CHALLENGE
    assert "not correct" in alert_text(page)
    assert sms_factor(enrolled.user).destination == PHONE_E164
    age_send_counters(3600)
    assert MASKED_PHONE in challenge(browser(), rp).get_data(as_text=True)


def test_the_old_phones_passcode_does_not_confirm_the_new_number(mfa, enrolled, cohort_rp):
    page = change_phone(mfa, cohort_rp[0])
    old_code = mfa.sms_passcode(to=PHONE_E164)
    if old_code == mfa.sms_passcode(to=NEW_PHONE_E164):
        pytest.skip("the two random passcodes happen to be equal")
    page = mfa.submit_passcode(page, old_code)
    assert heading(page) == CHALLENGE and "not correct" in alert_text(page)
    assert sms_factor(enrolled.user).destination == PHONE_E164


# --- a new MFA email -------------------------------------------------------------------------


def change_mfa_email(mfa, rp, address=NEW_MFA_EMAIL):
    """Modify → Email → the new address → Send Email Link: the page that waits for it."""
    page = choose(mfa, modify_page(mfa, rp), "email")
    assert heading(page) == "Verify Your Email", heading(page)
    page = mfa.post_form(page, {"e-email": address, "e-submit": "Send Email Link"},
                         prefix="e-")
    assert heading(page) == "Verify Your Email"
    return page


def mfa_account(user) -> MfaAccount:
    db.session.expire_all()
    return db.session.get(MfaAccount, user.id)


def test_modify_email_verifies_the_new_address_by_a_link_and_continue_finishes(
        mfa, enrolled, cohort_rp):
    rp, secret = cohort_rp
    user = enrolled.user
    page = change_mfa_email(mfa, rp)
    assert mfa_account(user).mfa_email == "alice@example.com"
    link = mfa.email_link(to=NEW_MFA_EMAIL)
    assert heading(mfa.http.get(link)) == "Thank you for verifying your email"
    params = mfa.finish(mfa.go(mfa.continue_after_link(page)))
    assert "code" in params, params
    assert mfa_account(user).mfa_email == NEW_MFA_EMAIL
    db.session.expire_all()
    assert db.session.get(User, user.id).email == "alice@example.com"
    notice = emails_to(mfa, "alice@example.com")[-1]
    assert "email address" in notice.text and "was changed" in notice.text
    assert mfa.id_token_claims(rp, secret, params)["acr"] == ACR_MFA


def test_continue_on_the_thank_you_page_finishes_the_modify_sign_in(mfa, enrolled, cohort_rp):
    change_mfa_email(mfa, cohort_rp[0])
    thanks = mfa.http.get(mfa.email_link(to=NEW_MFA_EMAIL))
    assert heading(thanks) == "Thank you for verifying your email"
    params = mfa.finish(mfa.post_form(thanks, {"k-submit": "Continue"}, prefix="k-"))
    assert "code" in params, params
    assert mfa_account(enrolled.user).mfa_email == NEW_MFA_EMAIL


def test_the_new_mfa_email_is_not_changed_until_its_link_is_opened(mfa, enrolled, cohort_rp):
    page = change_mfa_email(mfa, cohort_rp[0])
    page = mfa.continue_after_link(page)
    assert heading(page) == "Verify Your Email"
    assert "haven't seen the link opened" in alert_text(page)
    assert mfa_account(enrolled.user).mfa_email == "alice@example.com"
    assert not [m for m in emails_to(mfa, "alice@example.com") if "was changed" in m.text]


def test_modify_email_moves_an_enrolled_email_factor_to_the_new_address(
        mfa, new_user, cohort_rp, browser):
    rp = cohort_rp[0]
    enroll_by_email(browser(), rp)
    age_send_counters(3600)
    page = mfa.click(challenge(mfa, rp), MODIFY)
    page = mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com"))
    page = choose(mfa, page, "email")
    page = mfa.post_form(page, {"e-email": NEW_MFA_EMAIL, "e-submit": "Send Email Link"},
                         prefix="e-")
    mfa.http.get(mfa.email_link(to=NEW_MFA_EMAIL))
    mfa.finish(mfa.continue_after_link(page))
    age_send_counters(3600)
    other = browser()
    page = challenge(other, rp)
    assert "the email address a********@example.org" in page.get_data(as_text=True)
    code = other.email_passcode(to=NEW_MFA_EMAIL)
    params = other.finish(other.submit_passcode(page, code))
    assert "code" in params, params
    db.session.expire_all()
    factor = db.session.scalar(db.select(MfaFactor).filter_by(user_id=new_user.id,
                                                              kind="email"))
    assert factor.destination == NEW_MFA_EMAIL


# --- an authentication app, new recovery codes ------------------------------------------------


def test_modify_authentication_app_sets_up_totp_which_then_passes_the_challenge(
        mfa, enrolled, cohort_rp, browser):
    rp, secret = cohort_rp
    page = choose(mfa, modify_page(mfa, rp), "totp")
    assert heading(page) == "Set Up Your Authentication App", heading(page)
    key = re.search(r'<code class="secret">([A-Z2-7]+)</code>',
                    page.get_data(as_text=True)).group(1)
    params = mfa.finish(mfa.submit_passcode(page, pyotp.TOTP(key).now()))
    assert "code" in params, params
    db.session.expire_all()
    kinds = {f.kind for f in db.session.scalars(
        db.select(MfaFactor).filter_by(user_id=enrolled.user.id))}
    assert kinds == {"sms", "totp"}
    other = browser()
    page = other.use_method(challenge(other, rp), "Authentication app")
    next_step = pyotp.TOTP(key).at(time.time() + 30)
    params = other.finish(other.submit_passcode(page, next_step))
    claims = other.id_token_claims(rp, secret, params)
    assert {"otp", "swk", "mfa"} <= set(claims["amr"]), claims["amr"]


def test_modify_recovery_codes_shows_ten_new_codes_and_the_old_ones_stop_working(
        mfa, enrolled, cohort_rp, browser):
    rp, secret = cohort_rp
    page = choose(mfa, modify_page(mfa, rp), "recovery")
    assert heading(page) == "Save Your Recovery Codes"
    codes = mfa.recovery_codes(page)
    assert len(codes) == 10 and not set(codes) & set(enrolled.recovery_codes)
    assert "code" in mfa.finish(mfa.continue_from_recovery_codes(page))
    db.session.expire_all()
    assert db.session.scalar(db.select(db.func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == enrolled.user.id)) == 10
    other = browser()
    page = other.use_method(challenge(other, rp), "Use a recovery code")
    refused = other.submit_passcode(page, enrolled.recovery_codes[0])
    assert heading(refused) == CHALLENGE and alert_text(refused)
    params = other.finish(other.submit_passcode(refused, codes[0]))
    assert "rcode" in other.id_token_claims(rp, secret, params)["amr"]


def test_modify_from_an_email_only_account_can_add_a_phone(mfa, new_user, cohort_rp, browser):
    rp = cohort_rp[0]
    enroll_by_email(browser(), rp)
    age_send_counters(3600)
    page = mfa.click(challenge(mfa, rp), MODIFY)
    page = mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com"))
    page = mfa.enter_phone(choose(mfa, page, "phone"), NEW_PHONE)
    mfa.finish(mfa.submit_passcode(page, mfa.sms_passcode(to=e164(NEW_PHONE))))
    assert sms_factor(new_user).destination == NEW_PHONE_E164


def test_cancel_on_the_new_phones_passcode_page_finishes_the_sign_in_with_the_old_phone(
        mfa, enrolled, cohort_rp):
    rp, secret = cohort_rp
    page = change_phone(mfa, rp)
    params = mfa.finish(mfa.post_form(page, {"cancel": "Cancel"}, index=2))
    assert "code" in params, params
    assert set(mfa.id_token_claims(rp, secret, params)["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert sms_factor(enrolled.user).destination == PHONE_E164


def test_modify_email_waits_on_a_page_that_can_cancel_and_changes_nothing(
        mfa, enrolled, cohort_rp):
    page = change_mfa_email(mfa, cohort_rp[0])
    params = mfa.finish(mfa.post_form(page, {"cancel": "Cancel"}, index=2))
    assert "code" in params, params
    assert mfa_account(enrolled.user).mfa_email == "alice@example.com"


def test_modify_email_adds_an_email_factor_to_an_sms_only_account(
        mfa, enrolled, cohort_rp, browser):
    rp = cohort_rp[0]
    page = change_mfa_email(mfa, rp)
    mfa.http.get(mfa.email_link(to=NEW_MFA_EMAIL))
    mfa.finish(mfa.continue_after_link(page))
    db.session.expire_all()
    kinds = {f.kind: f.destination for f in db.session.scalars(
        db.select(MfaFactor).filter_by(user_id=enrolled.user.id))}
    assert kinds.get("email") == NEW_MFA_EMAIL
    age_send_counters(3600)
    other = browser()
    page = other.use_method(challenge(other, rp), "Email")
    assert "the email address a********@example.org" in page.get_data(as_text=True)
    params = other.finish(other.submit_passcode(page, other.email_passcode(to=NEW_MFA_EMAIL)))
    assert "code" in params, params
