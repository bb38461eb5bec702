"""Enrollment in a real browser: the mandatory enrollment of a new account, single sign-on
to the other applications afterwards, and an older account that says Not Now and enrolls at
a later sign-in, verifying another email with the link opened in a second browser."""

from __future__ import annotations

import pyotp

from tests.browser.journeys import enroll_by_sms, verify_account_email
from tests.browser.support import ACR_MFA, ACR_PWD, BEFORE_CUTOFF, CHALLENGE


def test_new_account_must_enroll_by_sms_and_returns_to_the_app_with_mfa(idp, person, cns):
    account = idp.new_account()
    phone = idp.new_phone()
    alice = person("alice")

    request = alice.start(cns)
    assert alice.heading == "Sign In"
    assert "Click-N-Ship" in alice.page.get_by_role("complementary").inner_text()
    alice.log_in(account)

    assert alice.heading == CHALLENGE
    assert alice.page.get_by_role("button", name="Enroll in MFA").count() == 1
    assert alice.page.get_by_role("button", name="Not Now").count() == 0
    assert "must use multifactor authentication" in alice.text()
    enroll_by_sms(alice, idp, account, phone)

    claims = alice.back_at(cns, request)
    assert claims["sub"] == account.sub
    assert claims["acr"] == ACR_MFA
    assert {"pwd", "sms", "otp", "mfa"} <= set(claims["amr"])


def test_after_enrolling_other_apps_sign_in_without_the_password(idp, person, cns,
                                                                informed_delivery, cop):
    account = idp.new_account()
    alice = person("alice")
    request = alice.start(cns)
    alice.log_in(account)
    enroll_by_sms(alice, idp, account, idp.new_phone())
    alice.back_at(cns, request)

    # Informed Delivery: no sign-in page, only its terms on this first visit.
    request = alice.start(informed_delivery)
    assert alice.heading == "Terms and Conditions"
    assert "Informed Delivery terms of use" in alice.text()
    alice.press("I Agree")
    claims = alice.back_at(informed_delivery, request)
    assert claims["sub"] == account.sub and claims["acr"] == ACR_MFA

    # The Customer Onboarding Portal demands MFA: this session has it already.
    request = alice.start(cop)
    claims = alice.back_at(cop, request)
    assert claims["sub"] == account.sub and claims["acr"] == ACR_MFA
    assert "mfa" in claims["amr"]
    assert all(heading != "Sign In" for heading in alice.journey.pages[-2:])


def test_older_account_says_not_now_then_enrolls_by_email_verified_in_another_browser(
        idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="olga")
    mfa_email = account.username + "@elsewhere.example"
    olga = person("olga")

    request = olga.start(cns)
    olga.log_in(account)
    assert olga.heading == CHALLENGE
    olga.press("Not Now")
    claims = olga.back_at(cns, request)
    assert claims["acr"] == ACR_PWD and claims["amr"] == ["pwd"]

    # A later sign-in with the password asks again.
    olga.sign_out()
    request = olga.start(cns)
    olga.log_in(account)
    assert olga.heading == CHALLENGE
    olga.press("Enroll in MFA")

    assert olga.heading == "Verify Your Email"
    olga.choose("No, I'd like to change my email")
    olga.press("Continue")
    assert olga.heading == "Verify Your Email"
    olga.fill("Email", mfa_email)
    olga.press("Send Email Link")
    assert "We sent a verification link" in olga.text()
    assert not idp.emails_to(account.email), "the account email got the link"

    # The link is opened on another device: it verifies the address and signs nobody in.
    phone = person("phone")
    phone.open(idp.email_link(mfa_email))
    assert phone.heading == "Thank you for verifying your email"
    assert phone.page.get_by_role("button", name="Continue").count() == 0
    assert "Go back to the window where you started" in phone.text()
    # A link works once; opened again it says what to do.
    phone.open(idp.email_link(mfa_email))
    assert phone.heading == "Link expired"
    assert "Resend" in phone.alert()

    olga.press("Continue")
    assert olga.heading == "Choose Your MFA Method"
    olga.choose("Email")
    olga.press("Continue")
    assert olga.heading == CHALLENGE
    assert "Please enter the passcode sent to" in olga.text()
    olga.submit_passcode(idp.email_passcode(mfa_email))
    assert olga.heading == "Save Your Recovery Codes"
    olga.follow("Continue")

    claims = olga.back_at(cns, request)
    assert claims["acr"] == ACR_MFA
    assert {"pwd", "email", "otp", "mfa"} <= set(claims["amr"])
    # The MFA email is for MFA only: the account's email is unchanged.
    assert cns.userinfo()["email"] == account.email



def test_enrolling_an_authentication_app_by_its_key(idp, person, cns):
    account = idp.new_account()
    tom = person("tom")
    request = tom.start(cns)
    tom.log_in(account)
    tom.press("Enroll in MFA")
    verify_account_email(tom, idp, account)
    tom.choose("Authentication app")
    tom.press("Continue")

    assert tom.heading == "Set Up Your Authentication App"
    assert tom.page.get_by_role("img", name="QR code for your authentication app").is_visible()
    key = tom.page.locator("code.secret").inner_text()
    code = tom.page.get_by_label("Code from your app", exact=True)
    assert code.get_attribute("inputmode") == "numeric"
    assert code.get_attribute("autocomplete") == "one-time-code"
    tom.fill("Code from your app", pyotp.TOTP(key).now())
    tom.press("Submit")
    assert tom.heading == "Save Your Recovery Codes"
    assert tom.page.locator(".recovery-codes li").count() == 10
    tom.follow("Continue")

    claims = tom.back_at(cns, request)
    assert claims["acr"] == ACR_MFA
    assert {"pwd", "otp", "swk", "mfa"} <= set(claims["amr"])


def test_offline_access_is_asked_for_once_on_the_consent_page(idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="olga")
    olga = person("olga")
    request = olga.start(cns, scope="openid profile offline_access")
    olga.log_in(account)
    olga.press("Not Now")

    assert olga.heading == "Allow access"
    assert "access to your account while you are not signed in" in olga.text()
    olga.press("Allow")
    claims = olga.back_at(cns, request)
    assert claims["sub"] == account.sub
    assert cns.tokens["refresh_token"]
