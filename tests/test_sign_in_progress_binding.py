"""What a sign-in has proven belongs to the user (and the SSO session) that proved it.

An attacker with an account of their own and the victim's password (but not the victim's
second factor) passes their own factor on a pending sign-in, then types the victim's
password into the same sign-in: nothing they proved, asked for or were given carries over.
"""

from __future__ import annotations

import re

import pytest

from idp.extensions import db
from idp.models import AuditEvent
from plugins.mfa.factors import totp
from plugins.mfa.models import MfaAccount, MfaFactor, RecoveryCode
from tests.conftest import PASSWORD, forms, make_user
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    PHONE_E164,
    age_send_counters,
    copy_browser,
    enroll_by_app,
    totp_at,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import AFTER_CUTOFF, alert_text, heading

MODIFY = "Modify MFA Options"


T0 = 1_750_000_000.0  # the clock the authentication-app factor sees


@pytest.fixture
def attacker(app, browser, cohort_rp, enrolled, monkeypatch):
    """mallory, enrolled with an authentication app of her own at T0 (her next code is
    T0 + 60's); returns her app secret."""
    monkeypatch.setattr(totp, "time", type("Clock", (), {"time": staticmethod(
        lambda: T0 + 60)})())
    make_user("mallory", created_at=AFTER_CUTOFF)
    secret = enroll_by_app(browser(), cohort_rp[0], at=T0 + 30, username="mallory")
    age_send_counters(3600)
    return secret


def pending_id(page) -> str:
    return page.request.path.rstrip("/").rsplit("/", 1)[-1]


def victim_factors(user_id: int) -> list[tuple[str, str | None]]:
    db.session.expire_all()
    return sorted((f.kind, f.destination) for f in db.session.scalars(
        db.select(MfaFactor).filter_by(user_id=user_id)))


def codes_issued() -> int:
    db.session.expire_all()
    return len(list(db.session.scalars(
        db.select(AuditEvent).filter_by(event="authorization_granted"))))


def post_password(mfa, pid, username, password=PASSWORD):
    """Type a password into the sign-in ``pid``, without following the answer."""
    page = mfa.http.get(f"/signin/{pid}")
    fields = forms(page.get_data(as_text=True))[0]["fields"]
    fields.update(username=username, password=password, submit="1")
    return mfa.http.post(f"/signin/{pid}", data=fields)


def pass_own_app_challenge_with_modify(mfa, rp, secret):
    """mallory signs in on a new pending request, asks to modify, passes her app code
    without following the answer; returns the pending id."""
    page = mfa.start(rp, username="mallory")
    assert heading(page) == CHALLENGE, heading(page)
    pid = pending_id(page)
    page = mfa.go(mfa.http.get(f"/mfa/challenge/{pid}?modify=1"))
    fields = forms(page.get_data(as_text=True))[0]["fields"]
    fields.update(passcode=totp_at(secret, T0 + 60), submit="1")
    fields.pop("remember", None)  # this browser is not remembered for her
    answer = mfa.http.post(f"/mfa/challenge/{pid}", data=fields)
    assert answer.status_code == 302
    return pid


def try_every_mfa_page(mfa, pid) -> list:
    """The Modify, app set-up, phone and email pages, as GET and as POST of what an
    attacker would type; returns the pages that answered."""
    pages = []
    for path in ("modify", "app", "phone", "modify-email", "enroll", "passcode"):
        pages.append(mfa.http.get(f"/mfa/{path}/{pid}"))
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                      mfa.http.get(f"/signin/{pid}").get_data(as_text=True)).group(1)
    posts = {
        "modify": {"option": "totp", "submit": "Continue"},
        "phone": {"phone": "(202) 555-0177", "submit": "Send Passcode"},
        "modify-email": {"e-email": "mallory@example.net", "e-submit": "Send Email Link",
                         "e-csrf_token": token},
        "app": {"passcode": "123456", "submit": "Submit"},
    }
    for path, data in posts.items():
        pages.append(mfa.http.post(f"/mfa/{path}/{pid}", data={"csrf_token": token, **data}))
    return pages


def assert_no_set_up_page_answered(pages) -> None:
    """None of the pages is Modify MFA Options, an app set-up or new recovery codes."""
    for page in pages:
        text = page.get_data(as_text=True)
        assert MODIFY not in re.findall(r"<h1>(.*?)</h1>", text), page.request.path
        assert "Set Up Your Authentication App" not in text, page.request.path
        assert "Save Your Recovery Codes" not in text, page.request.path
        assert page.status_code < 500


def test_mfa_passed_by_one_user_never_opens_modify_for_the_victim(
        app, mfa, cohort_rp, enrolled, attacker):
    rp = cohort_rp[0]
    victim = enrolled.user
    before = victim_factors(victim.id)
    codes_before = codes_issued()
    recovery_before = len(list(db.session.scalars(
        db.select(RecoveryCode.id).filter_by(user_id=victim.id))))

    pid = pass_own_app_challenge_with_modify(mfa, rp, attacker)
    answer = post_password(mfa, pid, "alice")
    assert answer.status_code == 302
    sms_before = len(mfa.sms_messages())

    assert_no_set_up_page_answered(try_every_mfa_page(mfa, pid))

    page = mfa.go(mfa.http.get(f"/authorize/resume/{pid}"))
    assert heading(page) == CHALLENGE
    assert "0143" in page.get_data(as_text=True)  # the victim's own phone
    assert victim_factors(victim.id) == before
    assert len(list(db.session.scalars(
        db.select(RecoveryCode.id).filter_by(user_id=victim.id)))) == recovery_before
    assert codes_issued() == codes_before
    # The only texts sent after the victim's password are the victim's own challenge codes.
    assert all(m["to"] == PHONE_E164 for m in mfa.sms_messages()[sms_before:])
    db.session.expire_all()
    account = db.session.get(MfaAccount, victim.id)
    assert account.mfa_email == "alice@example.com"


def test_mfa_passed_in_one_tab_never_applies_to_the_user_signed_in_in_another(
        app, mfa, cohort_rp, enrolled, attacker):
    rp = cohort_rp[0]
    victim = enrolled.user
    before = victim_factors(victim.id)
    codes_before = codes_issued()

    pid = pass_own_app_challenge_with_modify(mfa, rp, attacker)
    other_tab = copy_browser(app, mfa)
    other = other_tab.start(rp, username="alice", prompt="login")  # the victim's password
    assert heading(other) == CHALLENGE
    mfa.http.set_cookie(app.config["SESSION_COOKIE_NAME"],
                        other_tab.http.get_cookie(app.config["SESSION_COOKIE_NAME"]).value)

    assert_no_set_up_page_answered(try_every_mfa_page(mfa, pid))
    page = mfa.go(mfa.http.get(f"/authorize/resume/{pid}"))
    assert heading(page) == CHALLENGE
    assert victim_factors(victim.id) == before
    assert codes_issued() == codes_before


def test_a_password_typed_again_by_the_same_user_starts_a_new_event_without_modify(
        app, mfa, cohort_rp, attacker):
    """mallory passes her own challenge asking to modify, then types her password again on
    the same sign-in: the Modify page needs the challenge passed again."""
    rp = cohort_rp[0]
    pid = pass_own_app_challenge_with_modify(mfa, rp, attacker)
    post_password(mfa, pid, "mallory")
    page = mfa.go(mfa.http.get(f"/mfa/modify/{pid}"))
    assert heading(page) == CHALLENGE


def test_a_passcode_sent_before_the_sign_in_changed_hands_never_works_after(
        app, mfa, cohort_rp, enrolled, attacker):
    rp = cohort_rp[0]
    page = mfa.start(rp)  # alice: the challenge sends her a code
    assert heading(page) == CHALLENGE
    pid = pending_id(page)
    old_code = mfa.sms_passcode(to=PHONE_E164)

    post_password(mfa, pid, "mallory")  # someone else signs in on the same sign-in
    post_password(mfa, pid, "alice")
    age_send_counters(3600)
    page = mfa.go(mfa.http.get(f"/mfa/challenge/{pid}"))
    assert heading(page) == CHALLENGE
    refused = mfa.submit_passcode(page, old_code, remember=False)
    assert heading(refused) == CHALLENGE
    assert "not correct" in alert_text(refused)
    db.session.expire_all()
    discarded = db.session.scalars(db.select(AuditEvent).filter_by(
        event="sign_in_progress_discarded")).all()
    assert [e.detail["reason"] for e in discarded][-2:] == ["other_user", "other_user"]


def test_consent_and_terms_posted_with_only_the_password_record_nothing(
        app, mfa, enrolled):
    """On the victim's challenge (the password known, not the second factor), posting the
    consent and terms forms directly records neither."""
    from idp.models import Consent, TermsAcceptance
    from tests.conftest import make_client

    rp, _ = make_client(client_id="terms-rp", terms_text="Be kind.",
                        settings={"mfa_policy": "cohort"})
    page = mfa.start(rp, scope="openid offline_access")
    assert heading(page) == CHALLENGE
    pid = pending_id(page)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                     page.get_data(as_text=True)).group(1)
    for path, button in (("consent", "allow"), ("terms", "agree")):
        answer = mfa.http.post(f"/{path}/{pid}", data={"csrf_token": csrf, button: "1"})
        assert answer.status_code == 302
        assert answer.headers["Location"] == f"/authorize/resume/{pid}"
    db.session.expire_all()
    assert db.session.scalar(db.select(Consent)) is None
    assert db.session.scalar(db.select(TermsAcceptance)) is None
    assert codes_issued_for(rp.client_id) == 0


def codes_issued_for(client_id: str) -> int:
    db.session.expire_all()
    return len(list(db.session.scalars(db.select(AuditEvent).filter_by(
        event="authorization_granted", client_id=client_id))))


def test_a_form_posted_for_one_user_does_nothing_for_the_user_signed_in_since(
        app, mfa, cohort_rp, enrolled, attacker):
    """mallory's challenge form is open; alice signs in in another tab of the browser;
    the code mallory submits is neither checked against alice's factors nor counted."""
    rp = cohort_rp[0]
    page = mfa.start(rp, username="mallory")
    assert heading(page) == CHALLENGE
    other_tab = copy_browser(app, mfa)
    other_tab.start(rp, username="alice", prompt="login")
    mfa.http.set_cookie(app.config["SESSION_COOKIE_NAME"],
                        other_tab.http.get_cookie(app.config["SESSION_COOKIE_NAME"]).value)

    fields = forms(page.get_data(as_text=True))[0]["fields"]
    fields.update(passcode="000000", submit="1")
    answer = mfa.http.post(page.request.path, data=fields)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/authorize/resume/")
    db.session.expire_all()
    account = db.session.get(MfaAccount, enrolled.user.id)
    assert account is None or account.failures == 0
