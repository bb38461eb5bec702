"""The hosted pages for people who use the keyboard, a screen reader or a small screen.

Every page any browser test reaches is also checked on arrival (one h1, reflow at 320 px,
no outside requests, no serious or critical axe-core violation; see ``support.Person``)."""

from __future__ import annotations

from tests.browser.support import ACR_PWD, BEFORE_CUTOFF, CHALLENGE


def test_the_accessibility_check_reports_an_unlabelled_field(person):
    someone = person("checker")
    someone.page.set_content('<!doctype html><html lang="en"><title>t</title><main>'
                             '<h1>Form</h1><input type="text"></main></html>')
    violations = someone.axe_violations()
    assert any("] label:" in violation for violation in violations), violations


def test_sign_in_with_the_keyboard_alone(idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="kim")
    kim = person("kim")
    request = kim.start(cns)

    # The cursor is in User Name already.
    assert kim.focused() == "User Name"
    kim.page.keyboard.type(account.username)
    kim.keys("Tab")
    assert kim.focused() == "Password"
    assert kim.focus_is_visible()
    kim.page.keyboard.type(account.password)
    kim.keys("Tab")
    assert kim.focused() == "Log In"
    assert kim.focus_is_visible()
    with kim.navigation():
        kim.keys("Enter")

    assert kim.heading == CHALLENGE
    assert kim.tab_to("Enroll in MFA") == 1
    kim.tab_to("Not Now")
    assert kim.focus_is_visible()
    with kim.navigation():
        kim.keys("Enter")
    claims = kim.back_at(cns, request)
    assert claims["sub"] == account.sub and claims["acr"] == ACR_PWD


def test_enter_in_the_password_field_submits_the_sign_in(idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="kim")
    kim = person("kim")
    kim.start(cns)
    kim.page.keyboard.type(account.username)
    kim.keys("Tab")
    kim.page.keyboard.type(account.password)
    with kim.navigation():
        kim.keys("Enter")
    assert kim.heading == CHALLENGE


def test_sign_in_errors_are_announced_and_shown_next_to_each_field(idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="eve")
    eve = person("eve")
    eve.start(cns)

    eve.press("Log In")
    assert eve.heading == "Sign In"
    assert eve.alert() == "Please correct the fields below."
    assert eve.field_error("User Name") == "Enter your user name."
    assert eve.field_error("Password") == "Enter your password."
    # The first field to fix has the focus.
    assert eve.focused() == "User Name"

    eve.fill("User Name", account.username)
    eve.fill("Password", "not the password")
    eve.press("Log In")
    assert eve.alert() == "The user name or password you entered is incorrect."
    assert eve.page.get_by_label("User Name", exact=True).input_value() == account.username


def test_phone_number_errors_are_announced_and_shown_next_to_the_field(idp, person, cns):
    account = idp.new_account()
    ann = person("ann")
    ann.start(cns)
    ann.log_in(account)
    ann.press("Enroll in MFA")
    ann.choose("Yes")
    ann.press("Continue")
    ann.open(idp.email_link(account.email))
    ann.press("Continue")
    ann.choose("SMS")
    ann.press("Continue")

    ann.fill("Phone Number", "+44 20 7946 0958")
    ann.press("Send Passcode")
    assert ann.heading == "Verify Your Phone Number"
    assert "Only US phone numbers are accepted" in ann.alert()
    assert "Only US phone numbers are accepted" in ann.field_error("Phone Number")
    phone = ann.page.get_by_label("Phone Number", exact=True)
    assert phone.get_attribute("autocomplete") == "tel-national"
    assert phone.get_attribute("inputmode") == "tel"


def test_mfa_pages_lead_to_an_faq_with_the_apps_support_contact(idp, person, cns):
    account = idp.new_account(created_at=BEFORE_CUTOFF, prefix="fay")
    fay = person("fay")
    request = fay.start(cns)
    fay.log_in(account)
    assert fay.heading == CHALLENGE
    assert "Need help with MFA? Visit FAQs." in fay.page.get_by_role("complementary").inner_text()

    fay.follow("Visit FAQs.")
    assert fay.heading == "MFA: Frequently Asked Questions"
    assert "Click-N-Ship help: 1-800-555-0101" in fay.text()
    fay.back()
    assert fay.heading == CHALLENGE
    fay.press("Not Now")
    fay.back_at(cns, request)


def test_error_pages_say_what_to_do_next(idp, person):
    someone = person("someone")
    someone.open(idp.url + "/authorize?response_type=code&client_id=no-such-app"
                 "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid")
    assert someone.heading == "Unknown application"
    assert someone.alert()
    someone.open(idp.url + "/no/such/page")
    assert someone.heading == "Page not found"
    assert "Go back to the application you came from" in someone.alert()
