"""Remembered devices (DESIGN §2, §6): a browser that passed MFA with Remember this device
checked skips the passcode at later sign-ins, for the same account, for clients that allow
it, until it expires or is forgotten (by the user, or because a factor changed). It never
stands in for a factor where the client refuses devices or asks for the AAL2 alias. Every
journey ends with the ID token's amr and acr."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from idp.extensions import db
from plugins.mfa.models import RememberedDevice
from tests.conftest import make_user
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    age_devices,
    age_send_counters,
    age_session_events,
    audit_events,
    challenge_reasons,
    enroll_by_sms,
    pass_challenge,
    sign_out,
    step_reasons,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import ACR_AAL2, ACR_MFA, AFTER_CUTOFF, MfaBrowser, heading

NEW_PHONE = "(202) 555-0199"
NEW_PHONE_E164 = "+12025550199"


def claims_of(browser, rp_and_secret, response) -> dict:
    rp, secret = rp_and_secret
    return browser.id_token_claims(rp, secret, browser.finish(response))


def remembered(browser, rp_and_secret) -> dict:
    """Sign in on a browser that MFA will not ask again; returns the ID token's claims."""
    response = browser.start(rp_and_secret[0])
    assert response.status_code == 302, heading(response)
    assert response.headers["Location"].startswith(rp_and_secret[0].redirect_uris[0])
    return claims_of(browser, rp_and_secret, response)


def remember_this_browser(browser, rp_and_secret, remember=True) -> dict:
    """Sign in through the challenge (Remember this device as given), then sign out."""
    page = browser.start(rp_and_secret[0])
    claims = claims_of(browser, rp_and_secret, pass_challenge(browser, page, remember=remember))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    sign_out(browser)
    return claims


def devices(user_id: int) -> list[RememberedDevice]:
    db.session.expire_all()
    return list(db.session.scalars(
        db.select(RememberedDevice).filter_by(user_id=user_id, forgotten_at=None)
        .order_by(RememberedDevice.id)))


def sms_count(browser) -> int:
    return len(browser.sms_messages())


# --- remembering ------------------------------------------------------------------------


def test_a_remembered_browser_skips_the_passcode_at_a_later_sign_in(mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)
    sent = sms_count(mfa)

    claims = remembered(mfa, cohort_rp)
    assert "rdev" in claims["amr"] and "pwd" in claims["amr"]
    assert not {"otp", "sms", "mfa"} & set(claims["amr"])
    assert claims["acr"] == ACR_MFA
    assert sms_count(mfa) == sent
    assert step_reasons("mfa_remembered_device", enrolled.user.id) == ["remembered_device"]
    assert challenge_reasons(enrolled.user.id) == ["new_device"]  # the first sign-in only


def test_the_device_cookie_is_long_lived_http_only_and_holds_no_stored_value(
        mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    response = mfa.http.post(page.request.path, data={
        "csrf_token": re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                                page.get_data(as_text=True)).group(1),
        "passcode": mfa.sms_passcode(), "remember": "y", "submit": "Submit"})
    header = next(h for h in response.headers.getlist("Set-Cookie")
                  if h.startswith("idp_device="))
    assert "HttpOnly" in header
    assert f"Max-Age={30 * 24 * 3600}" in header
    token = mfa.http.get_cookie("idp_device").value
    [device] = devices(enrolled.user.id)
    assert token not in (device.token_digest, str(device.id))
    assert len(token) >= 32
    assert timedelta(days=29, hours=23) < device.expires_at - device.created_at <= timedelta(
        days=30)


def test_with_remember_this_device_unchecked_the_next_sign_in_is_challenged(
        mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp, remember=False)
    assert mfa.http.get_cookie("idp_device") is None
    assert devices(enrolled.user.id) == []

    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id) == ["new_device", "new_device"]
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=False))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_under_prompt_login_the_password_is_asked_but_the_passcode_is_skipped(
        mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=True))
    sent = sms_count(mfa)
    age_session_events(enrolled.user.id, 120, auth_time=True)  # a while later

    response = mfa.authorize(cohort_rp[0], prompt="login")
    assert response.headers["Location"].startswith("/signin/")  # the password page
    after = mfa.go(mfa.login(response))
    assert after.status_code == 302, heading(after)
    claims = claims_of(mfa, cohort_rp, after)
    assert step_reasons("login", None)[-1] == "login_prompt"
    assert step_reasons("mfa_remembered_device", enrolled.user.id) == ["remembered_device"]
    assert challenge_reasons(enrolled.user.id) == ["new_device"]  # the first sign-in only
    # A re-authentication is a new event: the passcode checked before it is not in amr.
    assert claims["amr"] == ["pwd", "rdev"]
    assert claims["acr"] == ACR_MFA
    assert sms_count(mfa) == sent


def test_a_tampered_device_cookie_is_ignored(mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)
    token = mfa.http.get_cookie("idp_device").value
    mfa.http.set_cookie("idp_device", token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=False))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


# --- where a remembered device does not count ------------------------------------------------


def test_a_client_that_refuses_remembered_devices_challenges_a_remembered_browser(
        mfa, enrolled, cohort_rp, strict_rp):
    remember_this_browser(mfa, cohort_rp)

    page = mfa.start(strict_rp[0])
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id)[-1] in ("client_policy", "new_device")
    claims = claims_of(mfa, strict_rp, pass_challenge(mfa, page))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA


def test_a_session_that_used_a_remembered_device_steps_up_for_a_strict_client_with_the_passcode(
        mfa, enrolled, cohort_rp, strict_rp):
    remember_this_browser(mfa, cohort_rp)
    claims = remembered(mfa, cohort_rp)
    assert "rdev" in claims["amr"]
    logins = len(audit_events("login_succeeded", enrolled.user.id))

    page = mfa.go(mfa.authorize(strict_rp[0]))
    assert heading(page) == CHALLENGE  # the passcode only, never the password again
    assert challenge_reasons(enrolled.user.id)[-1] == "client_policy"
    claims = claims_of(mfa, strict_rp, pass_challenge(mfa, page))
    assert len(audit_events("login_succeeded", enrolled.user.id)) == logins
    assert {"pwd", "sms", "otp", "mfa"} <= set(claims["amr"])
    assert claims["acr"] == ACR_MFA


def test_prompt_none_at_a_strict_client_with_only_a_remembered_device_is_interaction_required(
        mfa, enrolled, cohort_rp, strict_rp):
    remember_this_browser(mfa, cohort_rp)
    remembered(mfa, cohort_rp)
    answer = mfa.callback_params(mfa.authorize(strict_rp[0], prompt="none", state="st-1"))
    assert answer["error"] == "interaction_required"
    assert answer["state"] == "st-1"
    assert answer["iss"] == "http://localhost"


def test_a_remembered_device_does_not_meet_an_aal2_request(mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)

    page = mfa.start(cohort_rp[0], acr_values=ACR_AAL2)
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id)[-1] == "acr_not_met"
    assert not step_reasons("mfa_remembered_device", enrolled.user.id)
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert claims["acr"] == ACR_AAL2
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_a_session_that_used_a_remembered_device_is_challenged_for_aal2(
        mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)
    assert remembered(mfa, cohort_rp)["acr"] == ACR_MFA

    page = mfa.go(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id)[-1] == "acr_not_met"
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert claims["acr"] == ACR_AAL2


def test_the_device_of_one_account_does_not_help_another(mfa, browser, enrolled, cohort_rp):
    make_user("bob", created_at=AFTER_CUTOFF)
    enroll_by_sms(browser(), cohort_rp[0], username="bob", number="(202) 555-0188")
    age_send_counters(3600)
    remember_this_browser(mfa, cohort_rp)  # alice's device

    page = mfa.start(cohort_rp[0], username="bob")
    assert heading(page) == CHALLENGE
    assert "***-***-0188" in page.get_data(as_text=True)
    claims = claims_of(mfa, cohort_rp,
                       pass_challenge(mfa, page, remember=False, to="+12025550188"))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert challenge_reasons()[-1] == "new_device"
    assert not step_reasons("mfa_remembered_device")


# --- the devices page ---------------------------------------------------------------------


def forget_form(page, device_id: int) -> dict:
    html = page.get_data(as_text=True)
    for form in re.findall(r"<form [^>]*>.*?</form>", html, re.S):
        if f'name="device_id" value="{device_id}"' in form:
            csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
            return {"csrf_token": csrf, "device_id": str(device_id), "forget_one": "1"}
    raise AssertionError(f"no Forget button for device {device_id}")


def test_the_devices_page_lists_remembered_devices_and_forgets_one(
        mfa, browser, enrolled, cohort_rp):
    other = browser()
    remember_this_browser(other, cohort_rp)
    remember_this_browser(mfa, cohort_rp)
    first, second = devices(enrolled.user.id)
    remembered(mfa, cohort_rp)  # signed in again (the page needs a session)

    page = mfa.http.get("/mfa/devices")
    assert heading(page) == "Remembered Devices"
    html = page.get_data(as_text=True)
    assert html.count("Forget this device") == 2
    assert "Forget all devices" in html
    assert first.token_digest not in html and second.token_digest not in html

    page = mfa.go(mfa.http.post("/mfa/devices", data=forget_form(page, first.id)))
    assert "1 device forgotten." in page.get_data(as_text=True)
    assert [d.id for d in devices(enrolled.user.id)] == [second.id]
    assert page.get_data(as_text=True).count("Forget this device") == 1
    assert audit_events("devices_forgotten", enrolled.user.id)[-1].detail["reason"] == (
        "user_request")

    # The forgotten browser is challenged again; the other still is not.
    page = other.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    claims = claims_of(other, cohort_rp, pass_challenge(other, page, remember=False))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    sign_out(mfa)
    assert "rdev" in remembered(mfa, cohort_rp)["amr"]


def test_the_devices_page_forgets_all_devices(mfa, browser, enrolled, cohort_rp):
    other = browser()
    remember_this_browser(other, cohort_rp)
    remember_this_browser(mfa, cohort_rp)
    remembered(mfa, cohort_rp)

    page = mfa.http.get("/mfa/devices")
    page = mfa.post_form(page, button="forget_all", index=len(
        re.findall(r"<form ", page.get_data(as_text=True))) - 1)
    assert "2 devices forgotten." in page.get_data(as_text=True)
    assert "No remembered devices." in page.get_data(as_text=True)
    assert devices(enrolled.user.id) == []

    sign_out(mfa)
    for each in (mfa, other):
        page = each.start(cohort_rp[0])
        assert heading(page) == CHALLENGE
        claims = claims_of(each, cohort_rp, pass_challenge(each, page, remember=False))
        assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_the_devices_page_cannot_forget_another_accounts_device(
        mfa, browser, enrolled, cohort_rp):
    make_user("bob", created_at=AFTER_CUTOFF)
    bobs = browser()
    enroll_by_sms(bobs, cohort_rp[0], username="bob", number="(202) 555-0188", remember=True)
    bob_id = db.session.scalar(db.select(RememberedDevice.user_id))
    [bob_device] = devices(bob_id)
    remember_this_browser(mfa, cohort_rp)
    remembered(mfa, cohort_rp)

    page = mfa.http.get("/mfa/devices")
    assert page.get_data(as_text=True).count("Forget this device") == 1
    data = forget_form(page, devices(enrolled.user.id)[0].id)
    data["device_id"] = str(bob_device.id)
    page = mfa.go(mfa.http.post("/mfa/devices", data=data))
    assert "0 devices forgotten." in page.get_data(as_text=True)
    assert [d.id for d in devices(bob_id)] == [bob_device.id]


def test_passing_the_challenge_again_on_a_remembered_browser_keeps_one_entry_for_it(
        mfa, enrolled, cohort_rp, strict_rp):
    remember_this_browser(mfa, cohort_rp)
    [before] = devices(enrolled.user.id)
    page = mfa.start(strict_rp[0])  # refuses remembered devices: challenged
    claims_of(mfa, strict_rp, pass_challenge(mfa, page, remember=True))

    [after] = devices(enrolled.user.id)
    assert after.id != before.id  # a new token for this browser, the old one forgotten
    remembered_page = mfa.http.get("/mfa/devices").get_data(as_text=True)
    assert remembered_page.count("Forget this device") == 1
    sign_out(mfa)
    assert "rdev" in remembered(mfa, cohort_rp)["amr"]


def test_the_devices_page_needs_a_signed_in_session(mfa, enrolled):
    page = mfa.http.get("/mfa/devices")
    assert page.status_code == 401
    assert "Sign in" in page.get_data(as_text=True)


def test_the_devices_page_needs_more_than_a_password(mfa, enrolled, cohort_rp):
    """Someone who has only the password (the challenge shown, not passed) can neither see
    nor forget the devices."""
    remember_this_browser(mfa, cohort_rp)
    other_browser = MfaBrowser(mfa.http.application.test_client(), mfa.mail, mfa.sms)
    page = other_browser.start(cohort_rp[0])
    assert heading(page) == CHALLENGE

    refused = other_browser.http.get("/mfa/devices")
    assert refused.status_code == 403
    assert "Forget this device" not in refused.get_data(as_text=True)
    assert "second factor" in refused.get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                     page.get_data(as_text=True)).group(1)
    posted = other_browser.http.post("/mfa/devices",
                                     data={"csrf_token": csrf, "forget_all": "1"})
    assert posted.status_code == 403
    assert len(devices(enrolled.user.id)) == 1


# --- forgotten when a factor changes, expired after the configured days --------------------


def test_an_admin_mfa_reset_forgets_every_device_and_the_next_sign_in_asks_to_enroll(
        runner, mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)
    assert len(devices(enrolled.user.id)) == 1

    result = runner.invoke(args=["mfa", "reset", "alice", "--yes"])
    assert result.exit_code == 0, result.output
    assert devices(enrolled.user.id) == []
    assert audit_events("devices_forgotten", enrolled.user.id)[-1].detail["reason"] == (
        "admin_reset")

    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert 'value="Enroll in MFA"' in page.get_data(as_text=True)
    assert step_reasons("mfa_offer", enrolled.user.id)[-1] == "enrollment_required"
    age_send_counters(3600)
    page = mfa.enroll_in_mfa(page)
    if heading(page) == "Verify Your Email":
        page = mfa.verify_email_yes(page)
        mfa.http.get(mfa.email_link(to="alice@example.com"))
        page = mfa.continue_after_link(page)
    page = mfa.choose_method(page, "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page, NEW_PHONE),
                               mfa.sms_passcode(to=NEW_PHONE_E164), remember=False)
    claims = claims_of(mfa, cohort_rp, mfa.continue_from_recovery_codes(page))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert claims["acr"] == ACR_MFA


def test_a_new_phone_number_forgets_every_remembered_device(
        mfa, browser, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)
    assert len(devices(enrolled.user.id)) == 1

    other = browser()
    page = other.click(other.start(cohort_rp[0]), "Modify MFA Options")
    page = other.submit_passcode(page, other.sms_passcode(), remember=False)
    assert heading(page) != CHALLENGE, heading(page)
    page = other.post_form(page, {"option": "phone", "submit": "Continue"})
    page = other.post_form(page, {"phone": NEW_PHONE, "submit": "Send Passcode"})
    page = other.submit_passcode(page, other.sms_passcode(to=NEW_PHONE_E164), remember=False)
    claims = claims_of(other, cohort_rp, page)
    assert {"pwd", "sms", "otp", "mfa"} <= set(claims["amr"])
    assert devices(enrolled.user.id) == []
    assert audit_events("devices_forgotten", enrolled.user.id)[-1].detail["reason"] == (
        "factor_changed")

    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert "***-***-0199" in page.get_data(as_text=True)
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, to=NEW_PHONE_E164))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_a_remembered_device_expires_after_the_configured_days(mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)
    age_devices(enrolled.user.id, 29)
    assert "rdev" in remembered(mfa, cohort_rp)["amr"]
    sign_out(mfa)

    age_devices(enrolled.user.id, 2)  # 31 days after it was remembered
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert challenge_reasons(enrolled.user.id)[-1] == "new_device"
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=False))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


class TestShorterRememberedDeviceLifetime:
    @pytest.fixture
    def app_config(self, mfa_settings):
        return {**mfa_settings, "IDP_REMEMBER_DEVICE_DAYS": 7}

    def test_the_lifetime_follows_idp_remember_device_days(self, mfa, enrolled, cohort_rp):
        remember_this_browser(mfa, cohort_rp)
        [device] = devices(enrolled.user.id)
        assert device.expires_at - device.created_at == timedelta(days=7)

        age_devices(enrolled.user.id, 6)
        assert "rdev" in remembered(mfa, cohort_rp)["amr"]
        sign_out(mfa)
        age_devices(enrolled.user.id, 1.01)
        page = mfa.start(cohort_rp[0])
        assert heading(page) == CHALLENGE
        claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page, remember=False))
        assert claims["acr"] == ACR_MFA



def test_a_password_change_forgets_every_device_ends_sessions_and_sends_a_notice(
        runner, mfa, enrolled, cohort_rp):
    remember_this_browser(mfa, cohort_rp)
    assert len(devices(enrolled.user.id)) == 1

    result = runner.invoke(args=["users", "set-password", "alice", "--password-stdin"],
                           input="a brand new password\n")

    assert result.exit_code == 0, result.output
    assert devices(enrolled.user.id) == []
    assert audit_events("devices_forgotten", enrolled.user.id)[-1].detail["reason"] == (
        "password_changed")
    assert any(m.message["Subject"] == "Your password was changed" for m in mfa.mail.messages)
    # The session ended: the password is asked again, then (no device) the passcode.
    page = mfa.start(cohort_rp[0], password="a brand new password")
    assert heading(page) == CHALLENGE
