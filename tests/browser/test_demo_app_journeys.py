"""The journeys through the demo applications of ``examples/relying_party``: sign in to
Click-N-Ship, single sign-on to the others, a step-up, and a sign-out at one application
that ends the session at all three by back-channel logout."""

from __future__ import annotations

from tests.browser.journeys import enroll_by_sms
from tests.browser.support import ACR_MFA, CHALLENGE, Person, last_four

ACR_AAL2 = "http://idmanagement.gov/ns/assurance/aal/2"


class DemoAppPage:
    """What a demo application's home page shows."""

    def __init__(self, someone: Person):
        self.page = someone.page

    @property
    def signed_in_as(self) -> str | None:
        banner = self.page.locator("#signed-in-as")
        return banner.inner_text().removeprefix("Signed in as ") if banner.count() else None

    def claim(self, name: str) -> str:
        table = self.page.get_by_role("table", name="Your ID token")
        return table.get_by_role("row", name=name).get_by_role("cell").inner_text()

    @property
    def notice(self) -> str:
        return self.page.get_by_role("status").inner_text()


def visit(someone: Person, demo_apps, client_id: str) -> DemoAppPage:
    someone.open(demo_apps.urls[client_id] + "/")
    return DemoAppPage(someone)


def sign_in_to_click_n_ship(someone: Person, idp, demo_apps, account, phone) -> DemoAppPage:
    """A new account signs in to Click-N-Ship, enrolling by SMS on the way."""
    home = visit(someone, demo_apps, "click-n-ship")
    assert home.signed_in_as is None
    someone.follow("Sign in")
    someone.log_in(account)
    enroll_by_sms(someone, idp, account, phone)
    assert someone.heading == "Terms and Conditions"
    someone.press("I Agree")
    assert someone.heading == "Click-N-Ship"
    return DemoAppPage(someone)


def test_click_n_ship_sign_in_shows_who_is_signed_in_and_how(idp, demo_apps, person):
    account = idp.new_account()
    alice = person("alice")
    home = sign_in_to_click_n_ship(alice, idp, demo_apps, account, idp.new_phone())

    assert home.signed_in_as == account.username
    assert home.claim("sub") == account.sub
    assert home.claim("acr") == ACR_MFA
    assert {"pwd", "sms", "otp", "mfa"} <= set(home.claim("amr").split())
    assert home.claim("auth_time").split()[0].isdigit()


def test_single_sign_on_to_the_other_apps_asks_no_password(idp, demo_apps, person):
    account = idp.new_account()
    alice = person("alice")
    sign_in_to_click_n_ship(alice, idp, demo_apps, account, idp.new_phone())
    signed_in = len(alice.journey.pages)

    # Informed Delivery: straight back, signed in.
    home = visit(alice, demo_apps, "informed-delivery")
    alice.follow("Sign in")
    assert alice.heading == "Informed Delivery"
    assert home.signed_in_as == account.username and home.claim("acr") == ACR_MFA

    # The Customer Onboarding Portal demands MFA: the session has it; only its terms remain.
    home = visit(alice, demo_apps, "customer-onboarding-portal")
    alice.follow("Sign in")
    assert alice.heading == "Terms and Conditions"
    alice.press("I Agree")
    assert alice.heading == "Customer Onboarding Portal"
    assert home.signed_in_as == account.username and home.claim("acr") == ACR_MFA
    assert "Sign In" not in alice.journey.pages[signed_in:]


def test_step_up_asks_for_the_passcode_but_not_the_password(idp, demo_apps, person):
    account = idp.new_account()
    phone = idp.new_phone()
    alice = person("alice")
    sign_in_to_click_n_ship(alice, idp, demo_apps, account, phone)

    # Signed out and in again: the remembered browser needs the password only (acr mfa).
    alice.follow("Sign out")
    home = DemoAppPage(alice)
    assert home.signed_in_as is None
    alice.follow("Sign in")
    alice.log_in(account)
    assert alice.heading == "Click-N-Ship"
    assert "rdev" in home.claim("amr").split()

    # A remembered browser is not enough for AAL2: the passcode is asked, the password not.
    alice.follow("Step up")
    assert alice.heading == CHALLENGE
    assert f"***-***-{last_four(phone)}" in alice.text()
    alice.submit_passcode(idp.sms_passcode(phone))
    assert alice.heading == "Click-N-Ship"
    assert home.notice == "Step-up complete."
    assert home.claim("acr") == ACR_AAL2
    assert {"pwd", "sms", "otp", "mfa"} <= set(home.claim("amr").split())


def test_signing_out_at_one_app_signs_out_of_all_three(idp, demo_apps, person):
    account = idp.new_account()
    alice = person("alice")
    sign_in_to_click_n_ship(alice, idp, demo_apps, account, idp.new_phone())
    visit(alice, demo_apps, "informed-delivery")
    alice.follow("Sign in")
    visit(alice, demo_apps, "customer-onboarding-portal")
    alice.follow("Sign in")
    alice.press("I Agree")
    assert DemoAppPage(alice).signed_in_as == account.username

    home = visit(alice, demo_apps, "informed-delivery")
    alice.follow("Sign out")
    assert alice.heading == "Informed Delivery"
    assert home.notice == "You have signed out."
    assert home.signed_in_as is None

    # The IdP told the other two by back-channel logout.
    for client_id in ("click-n-ship", "customer-onboarding-portal"):
        home = visit(alice, demo_apps, client_id)
        assert home.signed_in_as is None, client_id
    # And the IdP's own session is gone: signing in asks for the password again.
    alice.follow("Sign in")
    assert alice.heading == "Sign In"
