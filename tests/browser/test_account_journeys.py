"""The account pages in a real browser, from an application's sign-in page: Create New
Account through email verification and the mandatory enrollment back to the app, Forgot your
password? ending every session of the account, Forgot your username?, the account page
(/account) and a lost phone replaced after a recovery-code sign-in."""

from __future__ import annotations

import secrets

import requests

from tests.browser.journeys import challenged_sign_in, enroll_by_sms, enrolled_account
from tests.browser.support import ACR_MFA, CHALLENGE, PASSWORD, Account, last_four

CHECK_EMAIL = "Check Your Email"


def test_create_new_account_verifies_the_email_enrolls_and_returns_to_the_app(
        idp, person, cns):
    username = f"Dana.{secrets.token_hex(3)}"
    email = f"{username.lower()}@mail.example"
    password = "velvet harbor compass 7"
    idp.secrets_seen[password] = "password"
    phone = idp.new_phone()
    dana = person("dana")

    request = dana.start(cns)
    dana.follow("Create New Account")
    assert dana.heading == "Create New Account"
    assert "Click-N-Ship" in dana.page.get_by_role("complementary").inner_text()

    # A common password is refused next to its field, and what was typed stays.
    dana.fill("User Name", username)
    dana.fill("Password", "password123")
    dana.fill("Confirm Password", "password123")
    dana.fill("Email", email)
    dana.press("Create Account")
    assert dana.heading == "Create New Account"
    assert "too common" in dana.field_error("Password")
    assert dana.alert() == "Please correct the fields below."
    assert dana.page.get_by_label("User Name", exact=True).input_value() == username
    assert dana.page.get_by_label("Email", exact=True).input_value() == email

    dana.fill("Password", password)
    dana.fill("Confirm Password", password)
    dana.fill("First Name (optional)", "Dana")
    dana.press("Create Account")
    assert dana.heading == "Confirm Your Email"
    assert "Open the link, then select Continue" in dana.text()

    dana.open(idp.account_link(email, "/account/verify-email"))
    assert dana.heading == "Verify Your Email Address"
    dana.press("Verify My Email")
    assert dana.heading == "Thank you for verifying your email"
    dana.follow("Continue")

    # A new account must enroll; its email is verified already, so the method comes next.
    assert dana.heading == CHALLENGE
    assert dana.page.get_by_role("button", name="Not Now").count() == 0
    dana.press("Enroll in MFA")
    assert dana.heading == "Choose Your MFA Method"
    dana.choose("SMS")
    dana.press("Continue")
    dana.fill("Phone Number", phone)
    dana.press("Send Passcode")
    assert f"***-***-{last_four(phone)}" in dana.text()
    dana.submit_passcode(idp.sms_passcode(phone, 1))
    assert dana.heading == "Save Your Recovery Codes"
    dana.follow("Continue")

    claims = dana.back_at(cns, request)
    assert claims["acr"] == ACR_MFA
    assert {"pwd", "sms", "otp", "mfa"} <= set(claims["amr"])


def test_forgot_password_resets_it_and_ends_every_session(idp, person, cns):
    phone = idp.new_phone()
    alice = person("alice")
    account = enrolled_account(alice, idp, cns, phone)
    new_password = "copper kite evening 19"
    idp.secrets_seen[new_password] = "password"

    # On another computer, Alice has forgotten her password.
    laptop = person("laptop")
    request = laptop.start(cns)
    laptop.follow("Forgot your password?")
    assert laptop.heading == "Forgot your password?"
    laptop.fill("User Name", account.username)
    laptop.press("Send Reset Link")
    assert laptop.heading == CHECK_EMAIL
    answer = laptop.text()

    laptop.open(idp.account_link(account.email, "/account/reset-password"))
    assert laptop.heading == "Reset Your Password"
    laptop.fill("New Password", new_password)
    laptop.fill("Confirm Password", new_password + "!")
    laptop.press("Reset Password")
    assert "don't match" in laptop.field_error("Confirm Password")
    laptop.fill("New Password", new_password)
    laptop.fill("Confirm Password", new_password)
    laptop.press("Reset Password")
    assert laptop.heading == "Your password has been reset"
    assert any("was changed" in m.text for m in idp.emails_to(account.email))

    # Signed in nowhere: the first browser's session ended, and its device is forgotten.
    alice.start(cns)
    assert alice.heading == "Sign In"
    alice.log_in(account)
    assert alice.heading == "Sign In"
    assert alice.alert() == "The user name or password you entered is incorrect."

    # The reset signed no one in: the laptop signs in with the new password and MFA.
    laptop.follow("Sign In")
    laptop.log_in(Account(account.username, account.email, account.sub, new_password))
    assert laptop.heading == CHALLENGE
    laptop.submit_passcode(idp.sms_passcode(phone))
    claims = laptop.back_at(cns, request)
    assert claims["sub"] == account.sub and claims["acr"] == ACR_MFA

    # An unknown user name gets the same answer.
    stranger = person("stranger")
    stranger.start(cns)
    stranger.follow("Forgot your password?")
    stranger.fill("User Name", "nobody-" + secrets.token_hex(4))
    stranger.press("Send Reset Link")
    assert stranger.heading == CHECK_EMAIL and stranger.text() == answer


def test_forgot_username_emails_it_and_the_user_signs_in_with_it(idp, person, informed_delivery):
    account = idp.new_account(prefix="erin")
    erin = person("erin")
    erin.start(informed_delivery)
    erin.follow("Forgot your username?")
    assert erin.heading == "Forgot your username?"
    erin.fill("Email", account.email.upper())
    erin.press("Send")
    assert erin.heading == CHECK_EMAIL
    message = idp.wait_for_email(account.email, 1)
    assert account.username in message.text

    erin.follow("Back to Sign In")
    assert erin.heading == "Sign In"
    erin.log_in(Account(account.username, account.email, account.sub, PASSWORD))
    assert erin.heading == CHALLENGE  # a new account: enrollment comes next


def test_the_account_page_changes_name_email_and_password_and_signs_out_other_browsers(
        idp, person, cns):
    phone = idp.new_phone()
    alice = person("alice")
    account = enrolled_account(alice, idp, cns, phone)
    new_password = "amber meadow violin 31"
    idp.secrets_seen[new_password] = "password"
    new_email = account.username.lower() + "@new.example"

    # Alice is signed in on her laptop too.
    laptop = person("laptop")
    challenged_sign_in(laptop, cns, account)
    laptop.submit_passcode(idp.sms_passcode(phone))

    # Her own browser passed MFA at enrollment: the account page opens at once.
    alice.open(idp.url + "/account")
    assert alice.heading == "Your Account"
    sections = [" ".join(h.split()) for h in alice.page.locator("h2").all_inner_texts()]
    assert sections == ["Profile", "Password", "MFA Methods", "Remembered Devices",
                        "Where You're Signed In", "Connected Applications",
                        "Recent Security Events"]
    assert f"***-***-{last_four(phone)}" in alice.text()

    alice.fill("First Name", "Alice")
    alice.press("Save Name")
    assert "Your name was saved." in alice.text()
    assert alice.page.get_by_label("First Name", exact=True).input_value() == "Alice"

    # Where You're Signed In: the laptop is listed, and signed out from here.
    assert alice.page.get_by_role("button", name="Sign Out", exact=True).count() == 1
    alice.press("Sign Out of All Other Browsers")
    assert "Signed out of 1 other browser." in alice.text()
    laptop.open(idp.url + "/account")
    assert laptop.heading == "Sign In"

    # The account email changes by the link sent to the new address.
    alice.fill("New Email", new_email)
    alice.press("Change Email")
    assert "Open it to make it your account email" in alice.text()
    alice.open(idp.account_link(new_email, "/account/confirm-email-change"))
    assert alice.heading == "Confirm Your New Email"
    alice.press("Use This Email")
    assert alice.heading == "Email Changed"
    assert any("was changed from" in m.text for m in idp.emails_to(account.email))

    # The password: the current one first.
    alice.open(idp.url + "/account")
    alice.fill("Current Password", "not my password")
    alice.fill("New Password", new_password)
    alice.fill("Confirm Password", new_password)
    alice.press("Change Password")
    assert "not correct" in alice.field_error("Current Password")
    alice.fill("Current Password", account.password)
    alice.fill("New Password", new_password)
    alice.fill("Confirm Password", new_password)
    alice.press("Change Password")
    assert "Your password was changed." in alice.text()
    assert any("password" in m.text.lower() and "changed" in m.text
               for m in idp.emails_to(new_email))

    events = alice.page.locator("table.events").inner_text()
    assert "Password changed" in events and "Account email changed" in events

    # The new password signs in elsewhere; the old one does not.
    tablet = person("tablet")
    tablet.start(cns)
    tablet.log_in(account)
    assert tablet.alert() == "The user name or password you entered is incorrect."
    tablet.log_in(Account(account.username, new_email, account.sub, new_password))
    assert tablet.heading == CHALLENGE


def test_mfa_methods_on_the_account_page_add_an_email_make_it_default_and_remove_the_phone(
        idp, person, cns):
    phone = idp.new_phone()
    alice = person("alice")
    account = enrolled_account(alice, idp, cns, phone)
    new_email = account.username.lower() + "@mfa.example"
    alice.open(idp.url + "/account")
    assert alice.heading == "Your Account"
    methods = alice.page.locator("section", has=alice.page.locator("#mfa-methods"))
    assert "Recovery codes left: 10" in " ".join(methods.inner_text().split())
    # The last method of an account that must have MFA has no Remove.
    assert methods.get_by_role("button", name="Remove", exact=True).count() == 0

    # Modify MFA Options: the remembered browser passes the challenge again for it.
    alice.press("Modify MFA Options")
    assert alice.heading == CHALLENGE
    alice.submit_passcode(idp.sms_passcode(phone))
    assert alice.heading == "Modify MFA Options"
    alice.choose("Email")
    alice.press("Continue")
    assert alice.heading == "Verify Your Email"
    alice.fill("Email", new_email)
    alice.press("Send Email Link")
    alice.open(idp.email_link(new_email))
    assert alice.heading == "Thank you for verifying your email"
    alice.press("Continue")
    assert alice.heading == "Your Account"

    methods = alice.page.locator("section", has=alice.page.locator("#mfa-methods"))
    assert "Email" in methods.inner_text()
    alice.press("Make Default")
    assert "Email is now your default method." in alice.text()
    with alice.navigation():
        methods.locator("li", has_text="SMS").get_by_role("button", name="Remove").click()
    assert "SMS was removed from your MFA methods." in alice.text()
    assert any("was removed" in m.text for m in idp.emails_to(account.email))

    # A new browser's challenge goes to the email now.
    tablet = person("tablet")
    request = challenged_sign_in(tablet, cns, account)
    tablet.submit_passcode(idp.email_passcode(new_email))
    claims = tablet.back_at(cns, request)
    assert "email" in claims["amr"] and "sms" not in claims["amr"]


def test_a_recovery_code_sign_in_asks_for_a_new_method_and_a_new_phone_replaces_the_lost_one(
        idp, person, cns):
    lost_phone, new_phone = idp.new_phone(), idp.new_phone()
    alice = person("alice")
    account = idp.new_account()
    request = alice.start(cns)
    alice.log_in(account)
    codes = enroll_by_sms(alice, idp, account, lost_phone)
    alice.back_at(cns, request)

    # The phone is lost; on a new computer Alice uses a recovery code.
    laptop = person("laptop")
    request = challenged_sign_in(laptop, cns, account)
    laptop.press("Use a recovery code")
    laptop.fill("Recovery code", codes[0])
    laptop.press("Submit")
    assert laptop.heading == "Set Up a New Method"
    assert "Recovery codes left: 9" in " ".join(laptop.text().split())
    laptop.press("Set Up a New Method")
    assert laptop.heading == "Modify MFA Options"
    laptop.choose("Phone")
    laptop.press("Continue")
    laptop.fill("Phone Number", new_phone)
    laptop.press("Send Passcode")
    laptop.submit_passcode(idp.sms_passcode(new_phone, 1))
    laptop.back_at(cns, request)

    # The next sign-in's passcode goes to the new phone, and no new method is asked for.
    tablet = person("tablet")
    request = challenged_sign_in(tablet, cns, account)
    assert f"***-***-{last_four(new_phone)}" in tablet.text()
    tablet.submit_passcode(idp.sms_passcode(new_phone))
    tablet.back_at(cns, request)


def test_the_account_page_removes_an_applications_access_and_forgets_remembered_devices(
        idp, person, cns):
    phone = idp.new_phone()
    alice = person("alice")
    account = enrolled_account(alice, idp, cns, phone)

    # The app asks for access while Alice is away (a refresh token), and she allows it.
    request = alice.start(cns, scope="openid profile email offline_access")
    assert alice.heading == "Allow access"
    alice.press("Allow")
    alice.back_at(cns, request)
    refresh_token = cns.tokens["refresh_token"]

    alice.open(idp.url + "/account")
    assert alice.heading == "Your Account"
    applications = alice.page.locator("section", has=alice.page.locator("#applications"))
    assert "Click-N-Ship" in applications.inner_text()
    alice.press("Remove Access")
    assert "The application's access was removed." in alice.text()
    assert "No application keeps access" in alice.text()
    # What the app sees: its refresh token no longer works.
    answer = requests.post(idp.url + "/token", timeout=10, auth=(cns.app.client_id,
                                                                 cns.app.secret),
                           data={"grant_type": "refresh_token", "refresh_token": refresh_token})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"

    # Remembered Devices: this browser, forgotten; its next sign-in is challenged.
    devices = alice.page.locator("section", has=alice.page.locator("#remembered-devices"))
    assert "Chrome on Linux" in devices.inner_text()
    alice.press("Forget All Devices")
    assert "1 device forgotten." in alice.text()
    alice.sign_out()
    alice.start(cns)
    alice.log_in(account)
    assert alice.heading == CHALLENGE
