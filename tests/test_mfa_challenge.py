"""The MFA challenge at sign-in (DESIGN §2, §6): an enrolled user on a browser the IdP has not
seen is asked for a passcode; Resend, expiry, wrong tries and the account cool-down; parallel
submissions; authentication apps and recovery codes; step-up, the AAL2 alias, prompt=none,
max_age; the help-desk commands. Every journey ends with the ID token's amr and acr."""

from __future__ import annotations

import json
import re

import pytest

from idp.extensions import db
from plugins.mfa import lockout
from plugins.mfa.factors import TotpFactor, totp
from plugins.mfa.models import MfaAccount, MfaFactor, Passcode
from tests.conftest import PASSWORD, forms, make_user
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    MASKED_PHONE,
    PHONE_E164,
    age_passcodes,
    age_send_counters,
    age_session_events,
    audit_events,
    challenge_reasons,
    copy_browser,
    end_cool_down,
    enroll_by_app,
    enroll_by_email,
    enroll_by_sms,
    pass_challenge,
    run_in_threads,
    sign_out,
    step_reasons,
    totp_at,
    wrong,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import ACR_AAL2, ACR_MFA, ACR_PWD, AFTER_CUTOFF, alert_text, heading


def text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def claims_of(browser, rp_and_secret, response) -> dict:
    rp, secret = rp_and_secret
    return browser.id_token_claims(rp, secret, browser.finish(response))


def sms_count(browser) -> int:
    return len([m for m in browser.sms_messages() if m["to"] == PHONE_E164])


# --- the challenge page -----------------------------------------------------------------


def test_a_challenged_sign_in_checks_one_password_hash_and_no_other(mfa, enrolled, cohort_rp,
                                                                     password_hash_calls):
    # Passcodes, device and session secrets are kept under SHA-256/HMAC: the password is
    # the only secret that costs an argon2id verification.
    page = mfa.start(cohort_rp[0])
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert "sms" in claims["amr"]
    assert password_hash_calls == {"verify": 1, "hash": 0}


def test_enrolled_user_on_a_new_browser_is_challenged_with_a_passcode_by_sms(
        mfa, enrolled, cohort_rp):
    sent_before = sms_count(mfa)
    page = mfa.start(cohort_rp[0])

    assert heading(page) == CHALLENGE
    shown = text(page)
    assert f"Please enter the passcode sent to the phone number {MASKED_PHONE}" in shown
    assert PHONE_E164 not in shown and "555-0143" not in shown
    html = page.get_data(as_text=True)
    assert re.search(r'<label for="passcode">Passcode</label>', html)
    assert re.search(r'<input [^>]*type="submit" value="Submit"', html)
    assert re.search(r'name="r-resend" type="submit" value="Resend"', html)
    assert forms(html)[0]["fields"].get("remember") == "y"  # checked by default
    assert '<label for="remember">Remember this device</label>' in html
    assert "Modify MFA Options" in shown
    assert "Use another method" in shown
    assert "Use a recovery code" in shown  # another way in when the phone is not at hand
    assert sms_count(mfa) == sent_before + 1

    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA
    assert challenge_reasons(enrolled.user.id) == ["new_device"]
    passed = audit_events("mfa_challenge_passed", enrolled.user.id)
    assert [e.detail["factor"] for e in passed] == ["sms"]


def test_the_challenge_offers_every_other_enrolled_factor_and_recovery_codes(
        mfa, enrolled, cohort_rp):
    db.session.add(MfaFactor(user_id=enrolled.user.id, kind="email",
                             destination="alice@example.com"))
    db.session.add(MfaFactor(user_id=enrolled.user.id, kind="totp",
                             secret_encrypted=TotpFactor().encrypt_secret(
                                 TotpFactor.new_secret())))
    db.session.commit()

    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert mfa.method_buttons(page) == {"Email": "email", "Authentication app": "totp",
                                        "Use a recovery code": "recovery"}  # not SMS, the one shown

    page = mfa.use_method(page, "Email")
    assert "Please enter the passcode sent to the email address" in text(page)
    assert "alice@example.com" not in text(page)
    claims = claims_of(mfa, cohort_rp,
                       mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com")))
    assert set(claims["amr"]) == {"pwd", "email", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA


# --- Resend and reopening -----------------------------------------------------------------


def test_reopening_the_challenge_sends_no_new_code_and_says_the_code_sent_is_still_valid(
        mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    code = mfa.sms_passcode()
    sent = sms_count(mfa)

    again = mfa.http.get(page.request.path)
    assert heading(again) == CHALLENGE
    assert "The passcode already sent is still valid." in text(again)
    assert sms_count(mfa) == sent

    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(again, code))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_resend_issues_a_new_code_and_the_old_code_no_longer_works(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    old = mfa.sms_passcode()

    page = mfa.resend(page)
    assert heading(page) == CHALLENGE
    assert f"We sent a new passcode to the phone number {MASKED_PHONE}." in text(page)
    new = mfa.sms_passcode()
    assert sms_count(mfa) == 3  # enrollment, challenge, resend
    if new == old:  # one chance in a million: resend once more
        page = mfa.resend(page)
        new = mfa.sms_passcode()

    refused = mfa.submit_passcode(page, old)
    assert heading(refused) == CHALLENGE
    assert "not correct" in alert_text(refused)
    assert not audit_events("mfa_challenge_passed", enrolled.user.id)

    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(refused, new))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA


class TestResendInterval:
    """With the send limits in the database and in Redis."""

    @pytest.fixture
    def app_config(self, mfa_settings, rate_limit_backend):
        return {**mfa_settings, **rate_limit_backend, "IDP_PASSCODE_RESEND_SECONDS": 30}

    def test_a_resend_sooner_than_the_interval_says_how_long_to_wait_and_keeps_the_code(
            self, mfa, enrolled, cohort_rp):
        page = mfa.start(cohort_rp[0])
        assert heading(page) == CHALLENGE
        sent = sms_count(mfa)

        page = mfa.resend(page)
        assert sms_count(mfa) == sent
        message = alert_text(page)
        assert re.search(r"Wait (30|29|28) seconds", message), message
        assert "still valid" in message

        age_send_counters(31)
        resent = mfa.resend(page)
        assert sms_count(mfa) == sent + 1
        assert "We sent a new passcode" in text(resent)
        claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(resent, mfa.sms_passcode()))
        assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}

    def test_the_code_kept_after_a_refused_resend_still_works(self, mfa, enrolled, cohort_rp):
        page = mfa.start(cohort_rp[0])
        code = mfa.sms_passcode()
        page = mfa.resend(page)
        assert "Wait" in alert_text(page)
        claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, code))
        assert claims["acr"] == ACR_MFA


# --- expiry, wrong tries, cool-down -------------------------------------------------------


def test_a_passcode_older_than_five_minutes_is_refused_with_a_message_to_resend(
        mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    code = mfa.sms_passcode()
    age_passcodes(5 * 60 + 1)

    refused = mfa.submit_passcode(page, code)
    assert heading(refused) == CHALLENGE
    assert "expired" in alert_text(refused)
    assert "Select Resend to get a new one." in alert_text(refused)

    page = mfa.resend(refused)
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, mfa.sms_passcode()))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_a_passcode_younger_than_five_minutes_still_works(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    age_passcodes(5 * 60 - 20)
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, mfa.sms_passcode()))
    assert claims["acr"] == ACR_MFA


def test_five_wrong_tries_kill_the_code_so_the_right_code_then_fails(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    code = mfa.sms_passcode()
    for attempt in range(1, 5):
        page = mfa.submit_passcode(page, wrong(code))
        assert "not correct" in alert_text(page), attempt
    page = mfa.submit_passcode(page, wrong(code))
    assert "Too many wrong tries for this passcode" in alert_text(page)

    page = mfa.submit_passcode(page, code)
    assert heading(page) == CHALLENGE
    assert "Resend" in alert_text(page)

    page = mfa.resend(page)
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, mfa.sms_passcode()))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_four_wrong_tries_leave_the_code_usable(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    code = mfa.sms_passcode()
    for _ in range(4):
        page = mfa.submit_passcode(page, wrong(code))
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, code))
    assert claims["acr"] == ACR_MFA


def failures(user_id: int) -> int:
    db.session.expire_all()
    account = db.session.get(MfaAccount, user_id)
    return account.failures if account else 0


def test_ten_failures_across_resends_start_a_cool_down_naming_the_wait_and_the_help_contact(
        mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    first = mfa.sms_passcode()
    for _ in range(5):
        page = mfa.submit_passcode(page, wrong(first))
    page = mfa.resend(page)  # Resend does not reset the count of failures
    second = mfa.sms_passcode()
    for _ in range(4):
        page = mfa.submit_passcode(page, wrong(second))
        assert "Too many failed attempts" not in alert_text(page)
    page = mfa.resend(page)
    third = mfa.sms_passcode()
    page = mfa.submit_passcode(page, wrong(third))  # the tenth failure in a row

    message = alert_text(page)
    assert "Too many failed attempts" in message
    assert "try again in 15 minutes" in message
    assert "help@rp.example" in message
    assert audit_events("mfa_locked", enrolled.user.id)

    # During the cool-down the right code is refused and Resend sends nothing.
    refused = mfa.submit_passcode(page, third)
    assert heading(refused) == CHALLENGE
    assert "Too many failed attempts" in alert_text(refused)
    assert "help@rp.example" in alert_text(refused)
    sent = sms_count(mfa)
    refused = mfa.resend(refused)
    assert sms_count(mfa) == sent
    assert "Too many failed attempts" in alert_text(refused)
    assert not audit_events("mfa_challenge_passed", enrolled.user.id)

    # Another browser is no way round it.
    other = copy_browser(mfa.http.application, mfa)
    other.http.delete_cookie(mfa.http.application.config["SESSION_COOKIE_NAME"])
    elsewhere = other.start(cohort_rp[0])
    assert heading(elsewhere) == CHALLENGE
    assert "Too many failed attempts" in alert_text(elsewhere)
    assert sms_count(mfa) == sent

    end_cool_down(enrolled.user.id)
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(refused, third))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert failures(enrolled.user.id) == 0


class TestShortCoolDown:
    @pytest.fixture
    def app_config(self, mfa_settings):
        return {**mfa_settings, "IDP_MFA_LOCKOUT_SECONDS": 120}

    def test_the_cool_down_message_names_the_configured_wait(self, mfa, enrolled, cohort_rp):
        page = mfa.start(cohort_rp[0])
        code = mfa.sms_passcode()
        for _ in range(5):
            page = mfa.submit_passcode(page, wrong(code))
        page = mfa.resend(page)
        code = mfa.sms_passcode()
        for _ in range(5):
            page = mfa.submit_passcode(page, wrong(code))
        assert "try again in 2 minutes" in alert_text(page)


def test_resend_does_not_reset_the_failure_counter(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    code = mfa.sms_passcode()
    for _ in range(3):
        page = mfa.submit_passcode(page, wrong(code))
    assert failures(enrolled.user.id) == 3
    page = mfa.resend(page)
    page = mfa.resend(page)
    assert failures(enrolled.user.id) == 3
    page = mfa.submit_passcode(page, wrong(mfa.sms_passcode()))
    assert failures(enrolled.user.id) == 4


def test_a_success_resets_the_failure_counter(mfa, browser, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    code = mfa.sms_passcode()
    for _ in range(5):
        page = mfa.submit_passcode(page, wrong(code))
    page = mfa.resend(page)
    code = mfa.sms_passcode()
    for _ in range(4):
        page = mfa.submit_passcode(page, wrong(code))
    assert failures(enrolled.user.id) == 9
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, code))
    assert claims["acr"] == ACR_MFA
    assert failures(enrolled.user.id) == 0

    other = browser()
    page = other.start(cohort_rp[0])
    page = other.submit_passcode(page, wrong(other.sms_passcode()))
    assert "Too many failed attempts" not in alert_text(page)
    assert "not correct" in alert_text(page)
    claims = claims_of(other, cohort_rp, other.submit_passcode(page, other.sms_passcode()))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


# --- atomic verification ------------------------------------------------------------------


def test_thirty_parallel_submissions_of_the_right_code_give_exactly_one_success(
        app, mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    code = mfa.sms_passcode()
    html = page.get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    path = page.request.path
    tabs = [copy_browser(app, mfa) for _ in range(30)]

    def submit(i):
        return tabs[i].http.post(path, data={"csrf_token": csrf, "passcode": code,
                                             "remember": "y", "submit": "Submit"})

    responses = run_in_threads(30, submit)
    # A tab whose submission arrives once the winner has finished the sign-in is told so.
    assert all(r.status_code in (200, 302) or (
        r.status_code == 400 and heading(r) == "Sign-in already finished")
        for r in responses), [r.status_code for r in responses]
    # The one that passed is remembered; the others see the page again, or (once the
    # session has moved on) are sent back to the sign-in.
    winners = [i for i, r in enumerate(responses)
               if any(h.startswith("idp_device=") for h in r.headers.getlist("Set-Cookie"))]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert len(audit_events("mfa_challenge_passed", enrolled.user.id)) == 1
    assert len(audit_events("device_remembered", enrolled.user.id)) == 1
    db.session.expire_all()
    used = db.session.scalars(db.select(Passcode).where(Passcode.used_at.is_not(None)))
    assert len(list(used)) == 2  # the enrollment's code and this one
    for i, response in enumerate(responses):
        if i not in winners and response.status_code == 200:
            assert heading(response) == CHALLENGE

    # The submissions that lost the race guessed nothing: the account is not cooling down.
    assert lockout.locked_until(enrolled.user.id) is None

    winner = tabs[winners[0]]
    claims = claims_of(winner, cohort_rp, winner.go(responses[winners[0]]))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA


# --- authentication app -------------------------------------------------------------------


T0 = 1_750_000_000.0  # a fixed moment: the tests set the clock the app checks codes against


@pytest.fixture
def clock(monkeypatch):
    """The time the authentication-app factor sees: ``clock.now`` (seconds)."""

    class Clock:
        now = T0

        def time(self):
            return self.now

    fake = Clock()
    monkeypatch.setattr(totp, "time", fake)
    return fake


@pytest.fixture
def app_user(new_user, cohort_rp, browser, clock):
    """alice, enrolled with an authentication app at T0; returns the app's secret."""
    return enroll_by_app(browser(), cohort_rp[0], at=T0)


def app_challenge(browser, rp):
    page = browser.start(rp)
    assert heading(page) == CHALLENGE, heading(page)
    assert "Enter the 6-digit code shown in your authentication app." in text(page)
    return page


def test_an_app_code_for_the_current_time_step_passes_the_challenge(
        mfa, app_user, cohort_rp, clock):
    clock.now = T0 + 600
    page = app_challenge(mfa, cohort_rp[0])
    assert 'for="passcode">Code from your app' in page.get_data(as_text=True)
    assert 'value="Resend"' not in page.get_data(as_text=True)
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, totp_at(app_user, clock.now)))
    assert set(claims["amr"]) == {"pwd", "otp", "swk", "mfa"}
    assert claims["acr"] == ACR_MFA


def test_an_app_code_is_accepted_once_per_time_step(mfa, browser, app_user, cohort_rp, clock):
    clock.now = T0 + 600
    code = totp_at(app_user, clock.now)
    page = app_challenge(mfa, cohort_rp[0])
    claims_of(mfa, cohort_rp, mfa.submit_passcode(page, code))

    other = browser()
    page = app_challenge(other, cohort_rp[0])
    replayed = other.submit_passcode(page, code)
    assert heading(replayed) == CHALLENGE
    assert "not correct" in alert_text(replayed)
    earlier = other.submit_passcode(replayed, totp_at(app_user, clock.now - 30))
    assert heading(earlier) == CHALLENGE  # older than the step used: refused too

    clock.now += 30
    claims = claims_of(other, cohort_rp,
                       other.submit_passcode(earlier, totp_at(app_user, clock.now)))
    assert set(claims["amr"]) == {"pwd", "otp", "swk", "mfa"}


def test_app_codes_one_step_off_are_accepted_and_two_steps_off_are_refused(
        mfa, browser, app_user, cohort_rp, clock):
    clock.now = T0 + 3000
    page = app_challenge(mfa, cohort_rp[0])
    for offset in (-60, 60):
        page = mfa.submit_passcode(page, totp_at(app_user, clock.now + offset))
        assert heading(page) == CHALLENGE, offset
        assert "not correct" in alert_text(page)
    claims = claims_of(mfa, cohort_rp,
                       mfa.submit_passcode(page, totp_at(app_user, clock.now - 30)))
    assert set(claims["amr"]) == {"pwd", "otp", "swk", "mfa"}

    other = browser()
    page = app_challenge(other, cohort_rp[0])
    claims = claims_of(other, cohort_rp,
                       other.submit_passcode(page, totp_at(app_user, clock.now + 30)))
    assert set(claims["amr"]) == {"pwd", "otp", "swk", "mfa"}


def test_app_enrollment_and_challenge_record_the_step_used(mfa, app_user, cohort_rp, clock):
    # The enrollment used the step of T0: the same code cannot sign in again.
    page = app_challenge(mfa, cohort_rp[0])
    refused = mfa.submit_passcode(page, totp_at(app_user, T0))
    assert heading(refused) == CHALLENGE
    clock.now = T0 + 30
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(refused, totp_at(app_user,
                                                                              clock.now)))
    assert claims["acr"] == ACR_MFA


# --- recovery codes -----------------------------------------------------------------------


def test_a_recovery_code_passes_the_challenge_once_and_sends_a_notice(
        mfa, browser, enrolled, cohort_rp):
    page = mfa.use_method(mfa.start(cohort_rp[0]), "Use a recovery code")
    assert heading(page) == CHALLENGE
    assert "Enter one of the recovery codes" in text(page)
    assert 'value="Resend"' not in page.get_data(as_text=True)
    mails_before = len(mfa.mail.messages)

    code = enrolled.recovery_codes[3]
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(page, code.lower()))
    assert "rcode" in claims["amr"]
    assert {"pwd", "mfa"} <= set(claims["amr"])
    assert "otp" not in claims["amr"] and "sms" not in claims["amr"]
    assert claims["acr"] == ACR_MFA

    notices = mfa.mail.messages[mails_before:]
    assert len(notices) == 1
    assert "alice@example.com" in notices[0].rcpt_tos
    assert "recovery code" in notices[0].text.lower()
    assert "9 recovery codes are left." in notices[0].text
    assert code not in notices[0].text

    other = browser()
    page = other.use_method(other.start(cohort_rp[0]), "Use a recovery code")
    refused = other.submit_passcode(page, code)
    assert heading(refused) == CHALLENGE
    assert alert_text(refused)
    claims = claims_of(other, cohort_rp, other.submit_passcode(refused,
                                                               enrolled.recovery_codes[4]))
    assert "rcode" in claims["amr"]


def test_a_recovery_code_of_another_account_is_refused(mfa, browser, enrolled, cohort_rp):
    make_user("bob", created_at=AFTER_CUTOFF)
    bob_codes = enroll_by_sms(browser(), cohort_rp[0], username="bob", number="(202) 555-0188")
    page = mfa.use_method(mfa.start(cohort_rp[0]), "Use a recovery code")
    refused = mfa.submit_passcode(page, bob_codes[0])
    assert heading(refused) == CHALLENGE
    claims = claims_of(mfa, cohort_rp, mfa.submit_passcode(refused, enrolled.recovery_codes[0]))
    assert "rcode" in claims["amr"]


# --- step-up ------------------------------------------------------------------------------


def test_an_older_account_that_chose_not_now_steps_up_at_a_strict_client_without_the_password(
        mfa, old_user, cohort_rp, strict_rp):
    params = mfa.finish(mfa.not_now(mfa.start(cohort_rp[0], "olga")))
    claims = mfa.id_token_claims(*cohort_rp, params)
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == ACR_PWD
    assert len(audit_events("mfa_not_now", old_user.id)) == 1

    page = mfa.go(mfa.authorize(strict_rp[0]))
    assert heading(page) == CHALLENGE  # the enrollment offer, not the sign-in form
    html = page.get_data(as_text=True)
    assert 'name="password"' not in html
    assert 'value="Enroll in MFA"' in html and 'value="Not Now"' not in html
    assert step_reasons("mfa_offer", old_user.id)[-1] == "client_policy"
    page = mfa.verify_email_yes(mfa.enroll_in_mfa(page))
    mfa.http.get(mfa.email_link(to="olga@example.com"))
    page = mfa.choose_method(mfa.continue_after_link(page), "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())
    claims = claims_of(mfa, strict_rp, mfa.continue_from_recovery_codes(page))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA
    assert len(audit_events("login_succeeded", old_user.id)) == 1


def test_a_password_level_session_asked_for_the_mfa_level_is_asked_only_for_the_passcode(
        mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    # The user leaves the challenge; the application asks again for the MFA level.
    page = mfa.go(mfa.authorize(cohort_rp[0], acr_values=ACR_MFA))
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id)[-1] == "acr_not_met"
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA
    assert len(audit_events("login_succeeded", enrolled.user.id)) == 2  # enrollment, here


# --- the AAL2 alias -----------------------------------------------------------------------


def test_aal2_is_met_by_an_sms_passcode_checked_within_twelve_hours(mfa, enrolled, cohort_rp):
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, mfa.start(cohort_rp[0])))
    assert claims["acr"] == ACR_MFA

    params = mfa.finish(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    claims = mfa.id_token_claims(*cohort_rp, params)
    assert claims["acr"] == ACR_AAL2
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}

    age_session_events(enrolled.user.id, 11 * 3600, methods={"sms"})
    params = mfa.finish(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    assert mfa.id_token_claims(*cohort_rp, params)["acr"] == ACR_AAL2


def test_aal2_is_no_longer_met_thirteen_hours_after_the_passcode(mfa, enrolled, cohort_rp):
    claims_of(mfa, cohort_rp, pass_challenge(mfa, mfa.start(cohort_rp[0])))
    age_session_events(enrolled.user.id, 13 * 3600, methods={"sms"})

    page = mfa.go(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id)[-1] == "acr_not_met"
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert claims["acr"] == ACR_AAL2
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_aal2_is_met_by_an_app_code(mfa, app_user, cohort_rp, clock):
    clock.now = T0 + 600
    page = app_challenge(mfa, cohort_rp[0])
    params = mfa.finish(mfa.submit_passcode(page, totp_at(app_user, clock.now)))
    mfa.id_token_claims(*cohort_rp, params)
    params = mfa.finish(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    claims = mfa.id_token_claims(*cohort_rp, params)
    assert claims["acr"] == ACR_AAL2
    assert set(claims["amr"]) == {"pwd", "otp", "swk", "mfa"}


def test_aal2_is_never_met_by_an_email_passcode(mfa, browser, new_user, cohort_rp):
    enroll_by_email(browser(), cohort_rp[0])
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    page = mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com"))
    claims = claims_of(mfa, cohort_rp, page)
    assert set(claims["amr"]) == {"pwd", "email", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA

    # Asked for voluntarily, AAL2 is not reached: the token says the level that was.
    params = mfa.finish(mfa.authorize(cohort_rp[0], acr_values=f"{ACR_AAL2} {ACR_MFA}"))
    claims = mfa.id_token_claims(*cohort_rp, params)
    assert claims["acr"] == ACR_MFA
    assert set(claims["amr"]) == {"pwd", "email", "otp", "mfa"}
    # Asked for as essential, it is refused.
    essential = json.dumps({"id_token": {"acr": {"essential": True, "values": [ACR_AAL2]}}})
    answer = mfa.callback_params(mfa.go(mfa.authorize(cohort_rp[0], claims=essential)))
    assert answer["error"] == "unmet_authentication_requirements"


def test_a_step_up_to_aal2_offers_only_factors_that_meet_it(mfa, enrolled, cohort_rp):
    db.session.add(MfaFactor(user_id=enrolled.user.id, kind="email",
                             destination="alice@example.com"))
    db.session.commit()
    page = mfa.use_method(mfa.start(cohort_rp[0]), "Email")
    page = mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com"))
    assert claims_of(mfa, cohort_rp, page)["acr"] == ACR_MFA

    page = mfa.go(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    assert heading(page) == CHALLENGE
    assert f"the phone number {MASKED_PHONE}" in text(page)
    assert set(mfa.method_buttons(page).values()) == {"recovery"}
    # Asking for the email passcode all the same shows the SMS challenge.
    asked = mfa.ask_for_method(page, "email")
    assert f"the phone number {MASKED_PHONE}" in text(asked)
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, asked))
    assert claims["acr"] == ACR_AAL2
    assert {"pwd", "sms", "otp", "mfa", "email"} <= set(claims["amr"])


# --- prompt=none --------------------------------------------------------------------------


def test_prompt_none_that_would_need_the_challenge_answers_interaction_required(
        mfa, enrolled, cohort_rp):
    assert heading(mfa.start(cohort_rp[0])) == CHALLENGE  # password only so far
    response = mfa.authorize(cohort_rp[0], prompt="none", state="st-none")
    answer = mfa.callback_params(response)
    assert response.headers["Location"].startswith("https://rp.example/cb?")
    assert answer["error"] == "interaction_required"
    assert answer["state"] == "st-none"
    assert answer["iss"] == "http://localhost"
    assert "code" not in answer


def test_prompt_none_that_would_need_enrollment_answers_interaction_required(
        mfa, old_user, cohort_rp, strict_rp):
    mfa.finish(mfa.not_now(mfa.start(cohort_rp[0], "olga")))
    answer = mfa.callback_params(mfa.authorize(strict_rp[0], prompt="none", state="st-x"))
    assert answer["error"] == "interaction_required"
    assert answer["state"] == "st-x" and answer["iss"] == "http://localhost"
    assert "code" not in answer


def test_prompt_none_after_mfa_answers_with_a_code(mfa, enrolled, cohort_rp, strict_rp):
    claims_of(mfa, cohort_rp, pass_challenge(mfa, mfa.start(cohort_rp[0]), remember=False))
    answer = mfa.callback_params(mfa.authorize(strict_rp[0], prompt="none", state="st-ok"))
    assert "error" not in answer
    assert answer["state"] == "st-ok"
    claims = mfa.id_token_claims(*strict_rp, answer)
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA


# --- max_age ------------------------------------------------------------------------------


def test_max_age_shorter_than_the_passcode_age_asks_for_the_passcode_again(
        mfa, enrolled, cohort_rp):
    claims_of(mfa, cohort_rp, pass_challenge(mfa, mfa.start(cohort_rp[0]), remember=False))
    age_session_events(enrolled.user.id, 600, methods={"sms"})

    page = mfa.go(mfa.authorize(cohort_rp[0], max_age="300"))
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id)[-1] == "max_age"
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=False))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA


def test_max_age_shorter_than_the_whole_sign_in_asks_the_password_then_the_passcode(
        mfa, enrolled, cohort_rp):
    claims_of(mfa, cohort_rp, pass_challenge(mfa, mfa.start(cohort_rp[0]), remember=False))
    age_session_events(enrolled.user.id, 600, auth_time=True)

    response = mfa.authorize(cohort_rp[0], max_age="300")
    page = mfa.go(mfa.login(response))
    assert step_reasons("login", enrolled.user.id)[-1] == "max_age"
    assert heading(page) == CHALLENGE
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=False))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA
    assert claims["auth_time"] >= claims["iat"] - 5


def test_max_age_longer_than_the_passcode_age_asks_nothing(mfa, enrolled, cohort_rp):
    claims_of(mfa, cohort_rp, pass_challenge(mfa, mfa.start(cohort_rp[0]), remember=False))
    age_session_events(enrolled.user.id, 100, auth_time=True)
    params = mfa.finish(mfa.authorize(cohort_rp[0], max_age="300"))
    assert mfa.id_token_claims(*cohort_rp, params)["acr"] == ACR_MFA


# --- help-desk commands -------------------------------------------------------------------


def test_mfa_status_shows_masked_values_only(runner, enrolled):
    result = runner.invoke(args=["mfa", "status", "alice"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["username"] == "alice"
    assert [f["kind"] for f in status["factors"]] == ["sms"]
    assert status["factors"][0]["destination"] == MASKED_PHONE
    assert status["recovery_codes_left"] == 10
    assert "+12025550143" not in result.output and "5550143" not in result.output
    assert "alice@example.com" not in result.output
    assert status["mfa_email"] and "@" in status["mfa_email"]


def test_mfa_reset_makes_the_next_sign_in_ask_for_enrollment_again(
        runner, mfa, enrolled, cohort_rp):
    result = runner.invoke(args=["mfa", "reset", "alice", "--yes"])
    assert result.exit_code == 0, result.output
    assert audit_events("mfa_reset", enrolled.user.id)

    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert 'value="Enroll in MFA"' in page.get_data(as_text=True)
    assert "Passcode" not in text(page)
    assert step_reasons("mfa_offer", enrolled.user.id)[-1] == "enrollment_required"
    assert not db.session.scalar(db.select(MfaFactor.id).filter_by(user_id=enrolled.user.id))


def test_an_mfa_reset_while_the_challenge_is_open_asks_the_password_then_enrollment(
        runner, mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert runner.invoke(args=["mfa", "reset", "alice", "--yes"]).exit_code == 0
    # The reset signed alice out everywhere: the open challenge leads to the password.
    again = mfa.go(mfa.http.get(page.request.path))
    assert again.status_code == 200
    assert heading(again) == "Sign In"
    refused = mfa.submit_passcode(page, mfa.sms_passcode())
    assert heading(refused) == "Sign In"
    assert not audit_events("mfa_challenge_passed", enrolled.user.id)
    after = mfa.go(mfa.submit(again, {"username": "alice", "password": PASSWORD},
                              button="submit"))
    assert 'value="Enroll in MFA"' in after.get_data(as_text=True)
    assert not audit_events("mfa_challenge_passed", enrolled.user.id)


def test_mfa_reset_asks_for_confirmation_without_yes(runner, enrolled):
    result = runner.invoke(args=["mfa", "reset", "alice"], input="n\n")
    assert result.exit_code != 0
    assert db.session.scalar(db.select(MfaFactor.id).filter_by(user_id=enrolled.user.id))


def test_sign_out_then_sign_in_on_the_same_browser_without_a_remembered_device_is_challenged(
        mfa, enrolled, cohort_rp):
    claims_of(mfa, cohort_rp, pass_challenge(mfa, mfa.start(cohort_rp[0]), remember=False))
    sign_out(mfa)
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=False))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert challenge_reasons(enrolled.user.id) == ["new_device", "new_device"]


def test_passing_the_challenge_on_a_new_device_sends_a_sign_in_notice(mfa, enrolled, cohort_rp):
    before = len(mfa.mail.messages)
    pass_challenge(mfa, mfa.start(cohort_rp[0]))
    notices = [m for m in mfa.mail.messages[before:]
               if m.message["Subject"] == "New sign-in to your account"]
    assert len(notices) == 1
    assert notices[0].rcpt_tos == ["alice@example.com"]
    assert "new device" in notices[0].text
