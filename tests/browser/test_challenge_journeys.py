"""The passcode challenge in a real browser: new and remembered browsers, Modify MFA Options
(Cancel, a new phone, a new email), Resend, and a passcode guessed wrong five times."""

from __future__ import annotations

from tests.browser.journeys import challenged_sign_in, enrolled_account
from tests.browser.support import ACR_MFA, CHALLENGE, last_four, to_e164

NOT_CORRECT = "The passcode you entered is not correct. Check it and try again."
USED_UP = "Too many wrong tries for this passcode. Select Resend to get a new one."


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_a_new_browser_is_challenged_and_the_remembered_one_is_not(idp, person, cns):
    phone = idp.new_phone()
    alice = person("alice")
    account = enrolled_account(alice, idp, cns, phone)

    # The browser that enrolled (Remember this device was checked) needs only the password.
    alice.sign_out()
    request = alice.start(cns)
    alice.log_in(account)
    claims = alice.back_at(cns, request)
    assert claims["acr"] == ACR_MFA
    assert "rdev" in claims["amr"] and "sms" not in claims["amr"]
    assert len(idp.texts_to(to_e164(phone))) == 1, "a passcode was sent to the known browser"

    # Another browser gets the challenge.
    laptop = person("laptop")
    request = challenged_sign_in(laptop, cns, account)
    assert f"***-***-{last_four(phone)}" in laptop.text()
    laptop.submit_passcode(idp.sms_passcode(phone, 2))
    claims = laptop.back_at(cns, request)
    assert claims["acr"] == ACR_MFA
    assert {"pwd", "sms", "otp", "mfa"} <= set(claims["amr"])


def test_modify_mfa_options_cancel_finishes_the_sign_in_and_changes_nothing(idp, person, cns):
    phone = idp.new_phone()
    account = enrolled_account(person("alice"), idp, cns, phone)
    laptop = person("laptop")
    request = challenged_sign_in(laptop, cns, account)

    laptop.follow("Modify MFA Options")
    assert laptop.heading == CHALLENGE
    assert "After you submit, you can change your MFA options." in laptop.text()
    laptop.submit_passcode(idp.sms_passcode(phone))
    assert laptop.heading == "Modify MFA Options"
    assert laptop.page.get_by_label("Phone", exact=True).count() == 1
    assert laptop.page.get_by_label("Email", exact=True).count() == 1
    laptop.press("Cancel")

    claims = laptop.back_at(cns, request)
    assert claims["acr"] == ACR_MFA and "sms" in claims["amr"]
    # Still the same phone: another browser's passcode goes there.
    tablet = person("tablet")
    challenged_sign_in(tablet, cns, account)
    assert f"***-***-{last_four(phone)}" in tablet.text()


def test_modify_mfa_options_moves_the_passcodes_to_a_new_phone(idp, person, cns):
    old_phone, new_phone = idp.new_phone(), idp.new_phone()
    account = enrolled_account(person("alice"), idp, cns, old_phone)
    laptop = person("laptop")
    request = challenged_sign_in(laptop, cns, account)

    laptop.follow("Modify MFA Options")
    laptop.submit_passcode(idp.sms_passcode(old_phone))
    laptop.choose("Phone")
    laptop.press("Continue")
    assert laptop.heading == "Verify Your Phone Number"
    laptop.fill("Phone Number", new_phone)
    laptop.press("Send Passcode")
    assert f"***-***-{last_four(new_phone)}" in laptop.text()
    laptop.submit_passcode(idp.sms_passcode(new_phone, 1))
    laptop.back_at(cns, request)

    assert "was changed" in idp.texts_to(to_e164(old_phone))[-1]
    tablet = person("tablet")
    challenged_sign_in(tablet, cns, account)
    assert f"***-***-{last_four(new_phone)}" in tablet.text()


def test_modify_mfa_options_verifies_a_new_email_by_its_link(idp, person, cns):
    phone = idp.new_phone()
    account = enrolled_account(person("alice"), idp, cns, phone)
    new_email = account.username + "@new.example"
    laptop = person("laptop")
    request = challenged_sign_in(laptop, cns, account)

    laptop.follow("Modify MFA Options")
    laptop.submit_passcode(idp.sms_passcode(phone))
    laptop.choose("Email")
    laptop.press("Continue")
    assert laptop.heading == "Verify Your Email"
    laptop.fill("Email", new_email)
    laptop.press("Send Email Link")
    assert "We sent a verification link" in laptop.text()
    laptop.open(idp.email_link(new_email))
    assert laptop.heading == "Thank you for verifying your email"
    laptop.press("Continue")
    laptop.back_at(cns, request)

    # The new address is an MFA method now: another browser may get its passcode there.
    tablet = person("tablet")
    request = challenged_sign_in(tablet, cns, account)
    tablet.press("Email")
    assert tablet.heading == CHALLENGE
    tablet.submit_passcode(idp.email_passcode(new_email))
    claims = tablet.back_at(cns, request)
    assert "email" in claims["amr"]


def test_resend_sends_a_new_passcode_and_the_old_one_stops_working(idp, person, cns):
    phone = idp.new_phone()
    account = enrolled_account(person("alice"), idp, cns, phone)
    laptop = person("laptop")
    request = challenged_sign_in(laptop, cns, account)
    first = idp.sms_passcode(phone, 2)

    laptop.press("Resend")
    assert laptop.heading == CHALLENGE
    assert f"We sent a new passcode to the phone number ***-***-{last_four(phone)}" in \
        laptop.page.get_by_role("status").inner_text()
    second = idp.sms_passcode(phone, 3)

    if first != second:
        laptop.submit_passcode(first)
        assert laptop.alert() == NOT_CORRECT
        assert laptop.field_error("Passcode") == NOT_CORRECT
    laptop.submit_passcode(second)
    claims = laptop.back_at(cns, request)
    assert claims["acr"] == ACR_MFA


def test_five_wrong_passcodes_use_the_passcode_up_until_resend(idp, person, cns):
    phone = idp.new_phone()
    account = enrolled_account(person("alice"), idp, cns, phone)
    laptop = person("laptop")
    request = challenged_sign_in(laptop, cns, account)
    code = idp.sms_passcode(phone, 2)

    for _ in range(4):
        laptop.submit_passcode(other_code(code))
        assert laptop.heading == CHALLENGE
        assert laptop.alert() == NOT_CORRECT
        assert laptop.field_error("Passcode") == NOT_CORRECT
    laptop.submit_passcode(other_code(code))
    assert laptop.alert() == USED_UP
    # The right passcode no longer works either.
    laptop.submit_passcode(code)
    assert laptop.alert() == USED_UP

    laptop.press("Resend")
    laptop.submit_passcode(idp.sms_passcode(phone, 3))
    claims = laptop.back_at(cns, request)
    assert claims["acr"] == ACR_MFA


def test_a_forgotten_device_is_challenged_again(idp, person, cns):
    phone = idp.new_phone()
    alice = person("alice")
    account = enrolled_account(alice, idp, cns, phone)

    alice.open(idp.url + "/mfa/devices")
    assert alice.heading == "Remembered Devices"
    forget = alice.page.get_by_role("button", name="Forget this device")
    assert forget.count() == 1
    # Its description names the device it forgets.
    device = alice.page.locator("#" + forget.get_attribute("aria-describedby")).inner_text()
    assert "Chrome" in device and "remembered" in device
    alice.press("Forget this device")
    assert alice.page.get_by_role("status").inner_text() == "1 device forgotten."
    assert "No remembered devices." in alice.text()

    alice.sign_out()
    challenged_sign_in(alice, cns, account)
