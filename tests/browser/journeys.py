"""Steps of the sign-in that several browser tests walk through, by the labels on the pages."""

from __future__ import annotations

from tests.browser.support import (
    CHALLENGE,
    Account,
    AuthorizationRequest,
    IdpServer,
    Person,
    RelyingParty,
    last_four,
)


def verify_account_email(someone: Person, idp: IdpServer, account: Account) -> None:
    """Verify Your Email → Yes, and open the emailed link in the same browser."""
    assert someone.heading == "Verify Your Email", someone.heading
    assert account.email in someone.text()
    someone.choose("Yes")
    someone.press("Continue")
    assert someone.heading == "Verify Your Email", someone.heading
    assert "We sent a verification link" in someone.text()
    someone.open(idp.email_link(account.email))
    assert someone.heading == "Thank you for verifying your email", someone.heading
    someone.press("Continue")


def enroll_by_sms(someone: Person, idp: IdpServer, account: Account, phone: str) -> list[str]:
    """From the mandatory enrollment offer to the recovery codes, then Continue; returns the
    recovery codes shown."""
    assert someone.heading == CHALLENGE, someone.heading
    someone.press("Enroll in MFA")
    verify_account_email(someone, idp, account)
    assert someone.heading == "Choose Your MFA Method", someone.heading
    someone.choose("SMS")
    someone.press("Continue")
    assert someone.heading == "Verify Your Phone Number", someone.heading
    someone.fill("Phone Number", phone)
    someone.press("Send Passcode")
    assert someone.heading == CHALLENGE, someone.heading
    where = f"the phone number ***-***-{last_four(phone)}"
    assert f"Please enter the passcode sent to {where}" in someone.text()
    assert someone.page.get_by_label("Remember this device").is_checked()
    someone.submit_passcode(idp.sms_passcode(phone, 1))
    assert someone.heading == "Save Your Recovery Codes", someone.heading
    codes = someone.page.locator("code").all_inner_texts()
    someone.follow("Continue")
    return codes


def enrolled_account(someone: Person, idp: IdpServer, rp: RelyingParty,
                     phone: str) -> Account:
    """A new account that enrolled by SMS in ``someone``'s browser (remembered there)."""
    account = idp.new_account()
    request = someone.start(rp)
    someone.log_in(account)
    enroll_by_sms(someone, idp, account, phone)
    someone.back_at(rp, request)
    return account


def challenged_sign_in(someone: Person, rp: RelyingParty,
                       account: Account) -> AuthorizationRequest:
    """Sign in from a browser the IdP does not know: it stops at the passcode challenge."""
    request = someone.start(rp)
    someone.log_in(account)
    assert someone.heading == CHALLENGE, someone.heading
    passcode = someone.page.get_by_label("Passcode", exact=True)
    assert passcode.get_attribute("inputmode") == "numeric"
    assert passcode.get_attribute("autocomplete") == "one-time-code"
    return request
