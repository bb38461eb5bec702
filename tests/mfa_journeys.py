"""Journeys and time travel shared by the challenge and remembered-device tests.

An enrolled account (``enrolled``: alice, SMS to ``PHONE`` plus her recovery codes, set up
in a browser of her own so that ``mfa`` is a browser the IdP has never seen), sign-out, the
reasons the sign-in pipeline gave (from the audit log), and helpers that move stored times
into the past as if that much time had passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pyotp
import pytest

from idp.extensions import db
from idp.models import AuditEvent, SsoSession, User
from plugins.mfa.models import MfaAccount, Passcode, RememberedDevice
from tests.concurrency import run_in_threads
from tests.conftest import forms
from tests.mfa_support import MfaBrowser, heading
from tests.ratelimit_support import age_counted_events

PHONE = "(202) 555-0143"
PHONE_E164 = "+12025550143"
MASKED_PHONE = "***-***-0143"
CHALLENGE = "Multifactor Authentication (MFA)"


@dataclass
class Enrolled:
    user: User
    recovery_codes: list[str]


# --- journeys ---------------------------------------------------------------------------


def enroll_by_sms(browser: MfaBrowser, rp, username="alice", number=PHONE,
                  remember=False) -> list[str]:
    """A new account's first sign-in, enrolling by SMS; returns the recovery codes."""
    email = f"{username}@example.com"
    page = browser.verify_email_yes(browser.enroll_in_mfa(browser.start(rp, username)))
    browser.http.get(browser.email_link(to=email))
    page = browser.choose_method(browser.continue_after_link(page), "sms")
    page = browser.submit_passcode(browser.enter_phone(page, number),
                                   browser.sms_passcode(to=e164(number)), remember=remember)
    codes = browser.recovery_codes(page)
    assert len(codes) == 10, heading(page)
    browser.finish(browser.continue_from_recovery_codes(page))
    return codes


def enroll_by_app(browser: MfaBrowser, rp, at: float, username="alice") -> str:
    """A new account's first sign-in, enrolling an authentication app with the code of
    time ``at``; returns the app's secret."""
    page = browser.verify_email_yes(browser.enroll_in_mfa(browser.start(rp, username)))
    browser.http.get(browser.email_link(to=f"{username}@example.com"))
    page = browser.choose_method(browser.continue_after_link(page), "totp")
    assert heading(page) == "Set Up Your Authentication App", heading(page)
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>',
                       page.get_data(as_text=True)).group(1)
    page = browser.submit_passcode(page, totp_at(secret, at), remember=False)
    browser.finish(browser.continue_from_recovery_codes(page))
    return secret


def enroll_by_email(browser: MfaBrowser, rp, username="alice") -> None:
    email = f"{username}@example.com"
    page = browser.verify_email_yes(browser.enroll_in_mfa(browser.start(rp, username)))
    browser.http.get(browser.email_link(to=email))
    page = browser.choose_method(browser.continue_after_link(page), "email")
    page = browser.submit_passcode(page, browser.email_passcode(to=email), remember=False)
    browser.finish(browser.continue_from_recovery_codes(page))


def e164(number: str) -> str:
    return "+1" + "".join(ch for ch in number if ch.isdigit())[-10:]


def totp_at(secret: str, at: float) -> str:
    return pyotp.TOTP(secret).at(at)


def pass_challenge(browser: MfaBrowser, page, remember=True, to=PHONE_E164):
    """Answer an SMS challenge with the code that arrived; returns the next page."""
    assert heading(page) == CHALLENGE, heading(page)
    return browser.submit_passcode(page, browser.sms_passcode(to=to), remember=remember)


def sign_out(browser: MfaBrowser) -> None:
    """Sign out of the IdP (the confirmation page's Sign Out)."""
    page = browser.http.get("/logout")
    assert heading(page) == "Sign Out", heading(page)
    fields = forms(page.get_data(as_text=True))[0]["fields"]
    response = browser.http.post("/logout", data=fields)
    assert response.status_code in (200, 302), response.status_code


def copy_browser(app, browser: MfaBrowser) -> MfaBrowser:
    """Another test client with this browser's cookies (the same browser, another tab)."""
    other = MfaBrowser(app.test_client(), browser.mail, browser.sms)
    for name in (app.config["SESSION_COOKIE_NAME"], "idp_device"):
        cookie = browser.http.get_cookie(name)
        if cookie is not None:
            other.http.set_cookie(name, cookie.value)
    other.verifier = browser.verifier
    return other


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- the audit log ------------------------------------------------------------------------


def step_reasons(step: str, user_id: int | None = None) -> list[str]:
    """The reasons the pipeline gave for ``step``, oldest first."""
    db.session.expire_all()
    rows = db.session.scalars(
        db.select(AuditEvent).filter_by(event="sign_in_step").order_by(AuditEvent.id)
    )
    return [row.detail["reason"] for row in rows
            if row.detail.get("step") == step and (user_id is None or row.user_id == user_id)]


def challenge_reasons(user_id: int | None = None) -> list[str]:
    return step_reasons("mfa_challenge", user_id)


def audit_events(event: str, user_id: int | None = None) -> list[AuditEvent]:
    db.session.expire_all()
    query = db.select(AuditEvent).filter_by(event=event).order_by(AuditEvent.id)
    if user_id is not None:
        query = query.filter_by(user_id=user_id)
    return list(db.session.scalars(query))


# --- time travel --------------------------------------------------------------------------


def age_send_counters(seconds: float) -> None:
    """Move every counted send ``seconds`` into the past (the resend interval passes)."""
    age_counted_events(seconds)


def age_passcodes(seconds: float) -> None:
    db.session.expire_all()
    for row in db.session.scalars(db.select(Passcode)):
        row.created_at -= timedelta(seconds=seconds)
        row.expires_at -= timedelta(seconds=seconds)
    db.session.commit()


def age_session_events(user_id: int, seconds: float, methods=None,
                       auth_time: bool = False) -> None:
    """Move the checks of the user's SSO sessions (those of ``methods``, or all) into the
    past; with ``auth_time`` also the session's authentication time."""
    db.session.expire_all()
    for row in db.session.scalars(db.select(SsoSession).filter_by(user_id=user_id)):
        row.events = [
            {**e, "at": e["at"] - int(seconds)} if methods is None or e.get("method") in methods
            else e
            for e in row.events
        ]
        if auth_time:
            row.auth_time -= timedelta(seconds=seconds)
    db.session.commit()


def age_devices(user_id: int, days: float) -> None:
    db.session.expire_all()
    for row in db.session.scalars(db.select(RememberedDevice).filter_by(user_id=user_id)):
        row.created_at -= timedelta(days=days)
        row.expires_at -= timedelta(days=days)
    db.session.commit()


def end_cool_down(user_id: int) -> None:
    db.session.expire_all()
    account = db.session.get(MfaAccount, user_id)
    account.locked_until = None
    db.session.commit()


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def enrolled(new_user, cohort_rp, browser) -> Enrolled:
    """alice, enrolled by SMS in a browser of her own; ``mfa`` has never seen her."""
    codes = enroll_by_sms(browser(), cohort_rp[0])
    age_send_counters(3600)
    return Enrolled(user=new_user, recovery_codes=codes)


__all__ = ["CHALLENGE", "MASKED_PHONE", "PHONE", "PHONE_E164", "Enrolled", "age_devices",
           "age_passcodes", "age_send_counters", "age_session_events", "audit_events",
           "challenge_reasons", "copy_browser", "e164", "end_cool_down", "enroll_by_app",
           "enroll_by_email", "enroll_by_sms", "enrolled", "pass_challenge",
           "run_in_threads", "sign_out", "step_reasons", "totp_at", "wrong"]
