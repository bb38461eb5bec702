"""A re-authentication (the password asked again for prompt=login or an exceeded max_age)
starts a new authentication event (DESIGN §6): the methods checked before it no longer
appear in amr nor count toward acr; a step-up adds to the current event."""

from __future__ import annotations

from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    age_session_events,
    challenge_reasons,
    pass_challenge,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import ACR_AAL2, ACR_MFA, heading


def claims_of(browser, rp_and_secret, response) -> dict:
    rp, secret = rp_and_secret
    return browser.id_token_claims(rp, secret, browser.finish(response))


def signed_in_by_sms(mfa, rp_and_secret) -> dict:
    """A first sign-in on this browser: password and SMS, the browser remembered."""
    page = mfa.start(rp_and_secret[0])
    claims = claims_of(mfa, rp_and_secret, pass_challenge(mfa, page, remember=True))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    return claims


def reauthenticate(mfa, rp_and_secret, **params) -> dict:
    """The password asked again; a remembered device stands in for the passcode."""
    response = mfa.authorize(rp_and_secret[0], **params)
    assert response.headers["Location"].startswith("/signin/"), response.headers["Location"]
    after = mfa.go(mfa.login(response))
    assert after.status_code == 302, heading(after)
    return claims_of(mfa, rp_and_secret, after)


def test_prompt_login_with_a_remembered_device_claims_only_the_password_and_the_device(
        mfa, enrolled, cohort_rp):
    first = signed_in_by_sms(mfa, cohort_rp)
    age_session_events(enrolled.user.id, 120, auth_time=True)

    claims = reauthenticate(mfa, cohort_rp, prompt="login")
    assert claims["amr"] == ["pwd", "rdev"]
    assert claims["acr"] == ACR_MFA
    assert claims["sid"] == first["sid"]  # the same SSO session, a new event in it


def test_an_exceeded_max_age_starts_a_new_event_too(mfa, enrolled, cohort_rp):
    signed_in_by_sms(mfa, cohort_rp)
    age_session_events(enrolled.user.id, 600, auth_time=True)

    claims = reauthenticate(mfa, cohort_rp, max_age="300")
    assert claims["amr"] == ["pwd", "rdev"]
    assert claims["acr"] == ACR_MFA


def test_the_sms_of_an_earlier_event_does_not_meet_aal2_after_a_re_authentication(
        mfa, enrolled, cohort_rp):
    signed_in_by_sms(mfa, cohort_rp)
    age_session_events(enrolled.user.id, 120, auth_time=True)
    reauthenticate(mfa, cohort_rp, prompt="login")
    before = len(challenge_reasons(enrolled.user.id))

    # Within 12 hours of the SMS, but in an earlier event: AAL2 needs a new passcode.
    page = mfa.go(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    assert heading(page) == CHALLENGE
    assert len(challenge_reasons(enrolled.user.id)) == before + 1
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert claims["acr"] == ACR_AAL2
    assert set(claims["amr"]) == {"pwd", "rdev", "sms", "otp", "mfa"}


def test_a_step_up_adds_to_the_current_event_and_keeps_its_password(
        mfa, enrolled, cohort_rp):
    signed_in_by_sms(mfa, cohort_rp)
    age_session_events(enrolled.user.id, 120, auth_time=True)
    reauthenticate(mfa, cohort_rp, prompt="login")
    first = claims_of(mfa, cohort_rp, mfa.authorize(cohort_rp[0]))  # single sign-on
    assert first["amr"] == ["pwd", "rdev"]

    page = mfa.go(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    claims = claims_of(mfa, cohort_rp, pass_challenge(mfa, page))
    assert claims["auth_time"] == first["auth_time"]  # no new password, the same event
    assert claims["amr"][0] == "pwd"
    assert {"sms", "otp", "mfa"} <= set(claims["amr"])
