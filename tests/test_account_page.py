"""The account page (/account): reached by signing in at the MFA level the account has,
its sections, and each change a member of the public makes there, with the MFA plugin on,
email through a real SMTP server on loopback and SMS through a real HTTP receiver."""

from __future__ import annotations

import html
import re

import pytest

from idp.extensions import db
from idp.models import AuditEvent, AuthorizationCode, Client, Consent, SsoSession, Token, User
from idp.timeutil import utcnow
from plugins.mfa.models import MfaAccount, MfaFactor, RememberedDevice
from tests.conftest import PASSWORD, forms
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    PHONE_E164,
    age_send_counters,
    age_session_events,
    audit_events,
    enroll_by_email,
    enroll_by_sms,
    pass_challenge,
    sign_out,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import heading

SECTIONS = ["Profile", "Password", "MFA Methods", "Remembered Devices",
            "Where You're Signed In", "Connected Applications", "Recent Security Events"]
NEW_PASSWORD = "plum orchard lantern 42"


def text(page) -> str:
    """The page's words, tags left out, spaces as a browser shows them."""
    words = re.sub(r"<[^>]+>", " ", page.get_data(as_text=True))
    return re.sub(r"\s+", " ", re.sub(r"\s+([.,:;])", r"\1", html.unescape(words)))


def section_headings(page) -> list[str]:
    return [html.unescape(h) for h in re.findall(r"<h2[^>]*>([^<]+)</h2>",
                                                  page.get_data(as_text=True))]


def form_with(page, button: str) -> dict:
    """The page's form that has the button named ``button`` (a name ending with it)."""
    for form in forms(page.get_data(as_text=True)):
        if any(name.endswith(button) for name in form["fields"]) or button in form.get(
                "buttons", {}):
            return form
    source = page.get_data(as_text=True)
    raise AssertionError(f"no form with {button!r}: {source[:200]}")


def post(mfa, page, action: str, data: dict):
    """Post to an account page action with the CSRF token of the page's form for it."""
    source = page.get_data(as_text=True)
    match = re.search(r'<form method="post" action="' + re.escape(action) + r'"[^>]*>(.*?)</form>',
                      source, re.S)
    assert match, f"no form posting to {action}"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                             match.group(1)))
    fields.update(re.findall(r'<input id="[^"]*" name="([^"]*csrf_token)" type="hidden" '
                             r'value="([^"]*)"', match.group(1)))
    fields.update(data)
    return mfa.http.post(action, data=fields)


def passcode_answer(mfa, page, code):
    """Submit the challenge's passcode; the answer itself (not followed)."""
    form = forms(page.get_data(as_text=True))[0]
    fields = {k: v for k, v in form["fields"].items() if "csrf_token" in k}
    return mfa.http.post(form["action"] or page.request.path,
                         data={**fields, "passcode": code, "submit": "Submit"})


def password_only(mfa, username="alice"):
    """From /account, the password typed; where that leads."""
    page = account_page(mfa)
    assert heading(page) == "Sign In", heading(page)
    return mfa.go(mfa.submit(page, {"username": username, "password": PASSWORD},
                             button="submit"))


def account_page(mfa):
    """GET /account and follow where it leads inside the IdP."""
    return mfa.go(mfa.http.get("/account"))


def signed_in_account(mfa, username="alice"):
    """Sign in from /account itself (password, then the SMS challenge); the account page."""
    page = account_page(mfa)
    assert heading(page) == "Sign In", heading(page)
    page = mfa.go(mfa.submit(page, {"username": username, "password": PASSWORD},
                             button="submit"))
    if heading(page) == CHALLENGE:
        page = pass_challenge(mfa, page, remember=False)
    page = mfa.go(page)
    assert heading(page) == "Your Account", heading(page)
    return page


@pytest.fixture
def alice(new_user, cohort_rp, browser):
    """alice, enrolled by SMS with a browser of her own."""
    enroll_by_sms(browser(), cohort_rp[0])
    age_send_counters(3600)
    return new_user


# --- reaching the page --------------------------------------------------------------------


def test_the_account_page_asks_for_the_password_and_the_second_factor_then_shows_every_section(
        alice, mfa):
    page = signed_in_account(mfa)
    assert section_headings(page) == SECTIONS
    assert page.headers["Cache-Control"] == "no-store"
    assert "***-***-0143" in text(page)  # the phone, masked
    assert "+12025550143" not in page.get_data(as_text=True)
    # No token went to the page's own client: its code was voided on arrival.
    codes = db.session.scalars(db.select(AuthorizationCode).filter_by(
        client_id="idp-account")).all()
    assert codes and all(code.used_at is not None for code in codes)
    assert not db.session.scalars(db.select(Token).filter_by(client_id="idp-account")).all()


def test_a_password_alone_does_not_open_the_account_page_of_an_account_with_mfa(alice, mfa):
    page = account_page(mfa)
    page = mfa.go(mfa.submit(page, {"username": "alice", "password": PASSWORD},
                             button="submit"))
    assert heading(page) == CHALLENGE
    # Going to /account again before passing the challenge is still no way in.
    again = account_page(mfa)
    assert heading(again) != "Your Account"


def test_an_account_that_must_have_mfa_sets_it_up_before_the_account_page(new_user, mfa):
    page = account_page(mfa)
    page = mfa.go(mfa.submit(page, {"username": "alice", "password": PASSWORD},
                             button="submit"))
    assert heading(page) == "Multifactor Authentication (MFA)"
    assert "Not Now" not in text(page)


def test_an_older_account_without_mfa_reaches_the_page_with_its_password_and_can_set_mfa_up(
        old_user, mfa):
    page = signed_in_account(mfa, "olga")
    assert "Set Up MFA" in text(page)
    page = mfa.go(post(mfa, page, "/account/sign-in", {"intent": "mfa_enroll"}))
    assert heading(page) == "Verify Your Email", heading(page)


def test_signed_in_pages_link_to_the_account_page(alice, mfa, cohort_rp):
    assert 'href="/account"' not in mfa.http.get("/mfa/faq").get_data(as_text=True)
    signed_in_account(mfa)
    assert 'href="/account"' in mfa.http.get("/mfa/faq").get_data(as_text=True)
    # An application's sign-in page too, after the page's own form.
    page = mfa.go(mfa.authorize(cohort_rp[0], prompt="consent",
                                scope="openid offline_access"))
    assert heading(page) == "Allow access", heading(page)
    source = page.get_data(as_text=True)
    assert source.index('href="/account"') > source.index("</main>")


# --- Profile and Password -----------------------------------------------------------------


def test_the_name_is_saved(alice, mfa):
    page = signed_in_account(mfa)
    response = post(mfa, page, "/account/profile", {"profile-given_name": "Alice",
                                                    "profile-family_name": "Liddell"})
    assert response.status_code == 302
    db.session.expire_all()
    user = db.session.get(User, alice.id)
    assert (user.given_name, user.family_name) == ("Alice", "Liddell")
    assert "Your name was saved." in text(account_page(mfa))


def test_the_account_email_changes_only_by_the_link_sent_to_the_new_address(alice, mfa):
    page = signed_in_account(mfa)
    response = post(mfa, page, "/account/email", {"email-email": "alice@new.example"})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(User, alice.id).email == "alice@example.com"
    message = mfa.last_email(to="alice@new.example")
    link = re.search(r"http://localhost(/account/confirm-email-change\?token=\S+)",
                     message.text).group(1)
    page = mfa.http.get(link)
    assert heading(page) == "Confirm Your New Email"
    form = forms(page.get_data(as_text=True))[0]
    done = mfa.http.post(link, data={k: v for k, v in form["fields"].items()
                                     if k == "csrf_token"})
    assert heading(done) == "Email Changed"
    db.session.expire_all()
    assert db.session.get(User, alice.id).email == "alice@new.example"
    notice = mfa.last_email(to="alice@example.com")
    assert "was changed from" in notice.text
    # The link works once.
    assert mfa.http.get(link).status_code == 400


def test_a_stale_session_signs_in_again_before_the_email_changes(alice, mfa):
    page = signed_in_account(mfa)
    age_session_events(alice.id, 3600)
    response = post(mfa, page, "/account/email", {"email-email": "alice@new.example"})
    page = mfa.go(response)
    assert heading(page) == "Sign In"
    assert not [m for m in mfa.mail.messages if "alice@new.example" in m.rcpt_tos]


def test_the_password_changes_with_the_current_one_and_other_browsers_are_signed_out(
        alice, mfa, browser, cohort_rp):
    other = browser()
    signed_in_account(other)
    page = signed_in_account(mfa)
    wrong = post(mfa, page, "/account/password", {
        "password-current": "not it at all", "password-password": NEW_PASSWORD,
        "password-confirm": NEW_PASSWORD})
    assert wrong.status_code == 400
    assert "The current password is not correct." in text(wrong)
    response = post(mfa, page, "/account/password", {
        "password-current": PASSWORD, "password-password": NEW_PASSWORD,
        "password-confirm": NEW_PASSWORD})
    assert response.status_code == 302
    # This browser stays signed in; the other is signed out.
    assert heading(account_page(mfa)) == "Your Account"
    assert heading(account_page(other)) == "Sign In"
    assert "password" in mfa.last_email(to="alice@example.com").text.lower()


def test_a_common_new_password_is_refused_and_nothing_changes(alice, mfa):
    page = signed_in_account(mfa)
    before = db.session.get(User, alice.id).password_hash
    response = post(mfa, page, "/account/password", {
        "password-current": PASSWORD, "password-password": "password1",
        "password-confirm": "password1"})
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.get(User, alice.id).password_hash == before


# --- MFA Methods and Remembered Devices ---------------------------------------------------


def test_the_last_method_of_an_account_that_must_have_mfa_cannot_be_removed(alice, mfa):
    page = signed_in_account(mfa)
    assert "Remove" not in re.findall(r">(Remove)<", page.get_data(as_text=True))
    response = post(mfa, page, "/mfa/account/methods", {"mfa-kind": "sms", "mfa-remove": "1"})
    assert "must keep at least one MFA method" in text(mfa.go(response))
    assert db.session.scalar(db.select(MfaFactor).filter_by(user_id=alice.id)) is not None


def test_a_second_method_can_be_made_default_and_the_other_removed(alice, mfa, cohort_rp):
    db.session.add(MfaFactor(user_id=alice.id, kind="email", destination="alice@example.com"))
    db.session.commit()
    page = signed_in_account(mfa)
    response = post(mfa, page, "/mfa/account/methods", {"mfa-kind": "email",
                                                        "mfa-make_default": "1"})
    assert response.status_code == 302
    assert db.session.get(MfaAccount, alice.id).default_kind == "email"
    response = post(mfa, account_page(mfa), "/mfa/account/methods",
                    {"mfa-kind": "sms", "mfa-remove": "1"})
    page = mfa.go(response)
    assert "SMS was removed" in text(page)
    db.session.expire_all()
    kinds = {f.kind for f in db.session.scalars(db.select(MfaFactor).filter_by(user_id=alice.id))}
    assert kinds == {"email"}
    assert "removed" in mfa.last_email(to="alice@example.com").text
    assert audit_events("mfa_factor_removed", alice.id)


def test_the_challenge_starts_with_the_default_method(alice, browser, cohort_rp):
    db.session.add(MfaFactor(user_id=alice.id, kind="email", destination="alice@example.com"))
    account = db.session.get(MfaAccount, alice.id)
    account.default_kind = "email"
    db.session.commit()
    fresh = browser()
    texts, emails = len(fresh.sms_messages()), len(fresh.mail.messages)
    page = fresh.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    # Without a default the phone (the first method) would get the passcode.
    assert len(fresh.sms_messages()) == texts
    assert len(fresh.mail.messages) == emails + 1
    page = fresh.submit_passcode(page, fresh.email_passcode(to="alice@example.com"))
    assert "code" in fresh.finish(page)


def test_modify_mfa_options_from_the_account_page_passes_the_challenge_again_even_on_a_remembered_device(  # noqa: E501
        new_user, cohort_rp, mfa):
    enroll_by_sms(mfa, cohort_rp[0], remember=True)
    age_send_counters(3600)
    sign_out(mfa)
    page = password_only(mfa)  # the remembered device stands in for the second factor
    assert heading(page) == "Your Account", heading(page)
    page = mfa.go(post(mfa, page, "/account/sign-in", {"intent": "mfa_modify",
                                                       "then": "mfa-methods"}))
    assert heading(page) == CHALLENGE, heading(page)
    page = pass_challenge(mfa, page, remember=False)
    assert heading(page) == "Modify MFA Options", heading(page)
    # Cancel goes back to the section it came from.
    form = forms(page.get_data(as_text=True))[0]
    answer = mfa.http.post(page.request.path, data={
        "csrf_token": form["fields"]["csrf_token"], "cancel": "Cancel"})
    back = mfa.http.get(answer.headers["Location"].replace("http://localhost", ""))
    assert back.headers["Location"] == "/account#mfa-methods"


def test_forgetting_every_remembered_device_from_the_account_page(new_user, cohort_rp, mfa):
    enroll_by_sms(mfa, cohort_rp[0], remember=True)
    page = account_page(mfa)
    assert heading(page) == "Your Account"
    response = post(mfa, page, "/mfa/account/devices", {"devices-forget_all": "1"})
    assert "1 device forgotten." in text(mfa.go(response))
    assert not db.session.scalars(db.select(RememberedDevice).filter_by(
        user_id=new_user.id, forgotten_at=None)).all()


# --- Where You're Signed In, Connected Applications, Recent Security Events ---------------


def test_signing_out_of_every_other_browser_ends_their_sessions(alice, mfa, browser):
    other = browser()
    signed_in_account(other)
    page = signed_in_account(mfa)
    assert text(page).count("Sign Out") >= 2
    response = post(mfa, page, "/account/sessions", {"sessions-others": "1"})
    # The browser alice enrolled with, and the other one.
    assert "Signed out of 2 other browsers." in text(mfa.go(response))
    live = db.session.scalars(db.select(SsoSession).filter_by(user_id=alice.id,
                                                              ended_at=None)).all()
    assert len(live) == 1
    assert heading(account_page(other)) == "Sign In"


def test_another_users_session_cannot_be_signed_out(alice, mfa, browser, app):
    from tests.conftest import make_user

    make_user("bob", created_at=utcnow().replace(year=2020))
    bob = browser()
    bob_page = bob.go(bob.http.get("/account"))
    bob.go(bob.submit(bob_page, {"username": "bob", "password": PASSWORD}, button="submit"))
    bob_sid = db.session.scalar(db.select(SsoSession.sid).join(User).filter(
        User.username == "bob"))
    page = signed_in_account(mfa)
    post(mfa, page, "/account/sessions", {"sessions-sid": bob_sid, "sessions-one": "1"})
    db.session.expire_all()
    assert db.session.scalar(db.select(SsoSession.ended_at).filter_by(sid=bob_sid)) is None


def test_removing_an_applications_access_revokes_its_tokens(alice, mfa, cohort_rp):
    rp, secret = cohort_rp
    params = mfa.finish(pass_challenge(mfa, mfa.start(rp, scope="openid offline_access",
                                                      prompt="consent")))
    response = mfa.token(rp, secret, params["code"])
    assert response.status_code == 200
    assert response.get_json().get("refresh_token")
    page = account_page(mfa)
    assert heading(page) == "Your Account"
    assert rp.label in text(page)
    response = post(mfa, page, "/account/applications", {"apps-client_id": rp.client_id,
                                                         "apps-submit": "1"})
    assert response.status_code == 302
    db.session.expire_all()
    tokens = db.session.scalars(db.select(Token).filter_by(user_id=alice.id,
                                                           client_id=rp.client_id)).all()
    assert tokens and all(t.revoked_at is not None for t in tokens)
    assert not db.session.scalars(db.select(Consent).filter_by(user_id=alice.id)).all()
    assert "No application keeps access" in text(account_page(mfa))


def test_recent_security_events_show_the_users_own_events_in_plain_words(alice, mfa, app):
    db.session.add(AuditEvent(event="login_failed", user_id=alice.id + 1000,
                              detail={}, at=utcnow()))
    db.session.commit()
    page = signed_in_account(mfa)
    events = text(page).split("Recent Security Events", 1)[1]
    assert "Signed in with your password" in events
    assert "Second factor passed" in events
    assert "Wrong password entered" not in events  # someone else's


# --- lost phone ---------------------------------------------------------------------------


def test_after_a_recovery_code_sign_in_the_user_is_asked_to_set_up_a_new_method(
        new_user, cohort_rp, mfa, browser):
    codes = enroll_by_sms(browser(), cohort_rp[0])
    page = mfa.start(cohort_rp[0])
    page = mfa.use_method(page, "Use a recovery code")
    page = mfa.submit_passcode(page, codes[0], remember=False)
    assert heading(page) == "Set Up a New Method", heading(page)
    assert "Recovery codes left: 9" in text(page)
    params = mfa.finish(mfa.post_form(page, button="not_now"))
    assert "code" in params
    # The next sign-in asks again.
    other = browser()
    page = other.start(cohort_rp[0])
    page = pass_challenge(other, page, remember=False)
    assert heading(page) == "Set Up a New Method"
    page = other.post_form(page, button="set_up")
    assert heading(page) == "Modify MFA Options", heading(page)


def test_a_lost_only_method_without_recovery_codes_names_whom_to_contact(
        new_user, cohort_rp, mfa, browser, app):
    from plugins.mfa.models import RecoveryCode

    enroll_by_sms(browser(), cohort_rp[0])
    db.session.execute(db.delete(RecoveryCode))
    db.session.commit()
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    contact = cohort_rp[0].help_contact or app.config["IDP_SUPPORT_CONTACT"]
    assert f"Contact {contact}" in text(page)
    assert "reset your MFA" in text(page)


def test_email_as_the_only_method_shows_the_account_page_too(new_user, cohort_rp, mfa, browser):
    enroll_by_email(browser(), cohort_rp[0])
    page = account_page(mfa)
    page = mfa.go(mfa.submit(page, {"username": "alice", "password": PASSWORD},
                             button="submit"))
    assert heading(page) == CHALLENGE
    page = mfa.go(mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com"),
                                      remember=False))
    assert heading(page) == "Your Account"
    assert PHONE_E164 not in page.get_data(as_text=True)


# --- what a stranger or a malformed request gets ------------------------------------------


def test_one_other_browser_is_signed_out_by_its_button(alice, mfa, browser):
    other = browser()
    signed_in_account(other)
    page = signed_in_account(mfa)
    mine = db.session.scalars(db.select(SsoSession).filter_by(user_id=alice.id,
                                                              ended_at=None)).all()
    assert len(mine) == 3  # the enrolling browser, the other, this one
    other_sid = db.session.scalar(db.select(SsoSession.sid).filter_by(
        user_id=alice.id, ended_at=None).order_by(SsoSession.id.desc()).offset(1).limit(1))
    response = post(mfa, page, "/account/sessions", {"sessions-sid": other_sid,
                                                     "sessions-one": "1"})
    assert "Signed out of 1 other browser." in text(mfa.go(response))
    db.session.expire_all()
    assert db.session.scalar(db.select(SsoSession.ended_at).filter_by(sid=other_sid))
    assert heading(account_page(other)) == "Sign In"
    assert audit_events("session_signed_out", alice.id)


def test_the_account_pages_code_cannot_be_redeemed_at_the_token_endpoint(alice, mfa):
    page = account_page(mfa)
    response = mfa.submit(page, {"username": "alice", "password": PASSWORD}, button="submit")
    page = passcode_answer(mfa, mfa.go(response), mfa.sms_passcode(to=PHONE_E164))
    assert page.status_code == 302 and "/account/callback?" in page.headers["Location"]
    code = re.search(r"code=([^&]+)", page.headers["Location"]).group(1)
    mfa.http.get(page.headers["Location"])
    answer = mfa.http.post("/token", data={
        "grant_type": "authorization_code", "code": code, "client_id": "idp-account",
        "redirect_uri": "http://localhost/account/callback", "code_verifier": "x" * 43})
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_grant"


def test_a_callback_with_another_state_goes_to_the_page_and_ignores_its_section(alice, mfa):
    signed_in_account(mfa)
    response = mfa.http.get("/account/callback?code=abc&state=forged&then=//evil.example")
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"


def test_a_stale_session_signs_in_again_before_a_method_is_removed_and_comes_back(
        alice, mfa):
    db.session.add(MfaFactor(user_id=alice.id, kind="email", destination="alice@example.com"))
    db.session.commit()
    page = signed_in_account(mfa)
    age_session_events(alice.id, 3600)
    response = post(mfa, page, "/mfa/account/methods", {"mfa-kind": "sms", "mfa-remove": "1"})
    page = mfa.go(response)
    assert heading(page) == "Sign In"
    assert db.session.scalar(db.select(MfaFactor).filter_by(user_id=alice.id, kind="sms"))
    page = mfa.go(mfa.submit(page, {"username": "alice", "password": PASSWORD},
                             button="submit"))
    assert heading(page) == CHALLENGE  # prompt=login: the second factor again too
    age_send_counters(3600)
    answer = passcode_answer(mfa, page, mfa.sms_passcode(to=PHONE_E164))
    assert answer.status_code == 302
    back = mfa.http.get(answer.headers["Location"].replace("http://localhost", ""))
    assert back.headers["Location"] == "/account#mfa-methods"
    assert heading(mfa.go(back)) == "Your Account"


@pytest.mark.parametrize(("action", "data", "status", "message"), [
    ("/account/sessions", {"sessions-sid": "\x00" * 70}, 400, None),
    ("/account/applications", {"apps-client_id": "no-such-app"}, 400, None),
    ("/account/applications", {"apps-client_id": "idp-account"}, 400, None),
    ("/mfa/account/devices", {"devices-device_id": "abc", "devices-forget_one": "1"}, 400,
     None),
    ("/mfa/account/methods", {"mfa-kind": "x" * 500, "mfa-remove": "1"}, 400, None),
    ("/mfa/account/methods", {"mfa-kind": "totp", "mfa-remove": "1"}, 302, None),
    ("/account/profile", {"profile-given_name": "A" * 5000}, 400,
     "Field cannot be longer than 100 characters."),
    ("/account/email", {"email-email": "not an address"}, 400,
     "Enter an email address like name@example.com."),
    ("/account/password", {"password-current": "", "password-password": "x"}, 400,
     "Enter your current password."),
])
def test_malformed_account_posts_get_a_clear_answer_never_a_500(alice, mfa, action, data,
                                                                  status, message):
    page = signed_in_account(mfa)
    token = re.search(r'name="profile-csrf_token" type="hidden" value="([^"]+)"',
                      page.get_data(as_text=True)).group(1)
    prefix = data and next(iter(data)).split("-")[0]
    response = mfa.http.post(action, data={f"{prefix}-csrf_token": token, **data})
    assert response.status_code == status
    if message:
        assert message in text(response)  # next to its field, on the page as it was


def test_account_posts_without_the_forms_token_change_nothing(alice, mfa):
    signed_in_account(mfa)
    response = mfa.http.post("/account/profile", data={"profile-given_name": "Mallory"})
    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.get(User, alice.id).given_name is None


def test_an_account_whose_email_is_unverified_does_not_reach_the_page(app, mfa):
    from tests.conftest import make_user

    user = make_user("carol", created_at=utcnow().replace(year=2020))
    user.must_verify_email = True
    db.session.commit()
    page = account_page(mfa)
    page = mfa.go(mfa.submit(page, {"username": "carol", "password": PASSWORD},
                             button="submit"))
    assert heading(page) == "Confirm Your Email"


def test_a_client_registered_as_idp_account_elsewhere_is_never_changed(app, mfa, old_user):
    from tests.conftest import make_client

    rp, _ = make_client(client_id="idp-account", redirect_uris=["https://other.example/cb"])
    response = mfa.http.get("/account")
    assert response.status_code == 503
    assert "Account page unavailable" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(db.select(Client.redirect_uris).filter_by(
        client_id="idp-account")) == ["https://other.example/cb"]


def test_the_command_line_refuses_the_account_pages_client_id(app):
    result = app.test_cli_runner().invoke(args=["clients", "create", "--client-id",
                                                "idp-account", "--name", "Mine",
                                                "--redirect-uri", "https://mine.example/cb"])
    assert result.exit_code != 0
    assert "reserved" in result.output


# --- what a stolen session, a known password or a remembered browser cannot do ---------------


def test_a_remembered_browser_and_the_password_do_not_pass_the_fresh_check(
        old_user, cohort_rp, mfa):
    enroll_by_sms(mfa, cohort_rp[0], username="olga", remember=True)
    age_send_counters(3600)
    page = account_page(mfa)
    assert heading(page) == "Your Account", heading(page)
    age_session_events(old_user.id, 3600)
    response = post(mfa, page, "/mfa/account/methods", {"mfa-kind": "sms", "mfa-remove": "1"})
    page = mfa.go(response)
    assert heading(page) == "Sign In"
    page = mfa.go(mfa.submit(page, {"username": "olga", "password": PASSWORD},
                             button="submit"))
    # The remembered browser does not stand in for the person here.
    assert heading(page) == CHALLENGE, heading(page)
    assert db.session.scalar(db.select(MfaFactor).filter_by(user_id=old_user.id, kind="sms"))


def test_an_email_change_is_told_to_the_current_address_and_a_password_change_cancels_it(
        alice, mfa):
    page = signed_in_account(mfa)
    post(mfa, page, "/account/email", {"email-email": "mallory@evil.example"})
    notice = mfa.last_email(to="alice@example.com")
    told = " ".join(notice.text.split())
    assert "asked to change its email to m" in told and "@evil.example" in told
    assert "mallory@evil.example" not in told
    link = re.search(r"http://localhost(/account/confirm-email-change\?token=\S+)",
                     mfa.last_email(to="mallory@evil.example").text).group(1)
    page = account_page(mfa)
    post(mfa, page, "/account/password", {
        "password-current": PASSWORD, "password-password": NEW_PASSWORD,
        "password-confirm": NEW_PASSWORD})
    assert mfa.http.get(link).status_code == 400
    db.session.expire_all()
    assert db.session.get(User, alice.id).email == "alice@example.com"


def test_the_account_pages_client_is_refused_at_the_authorization_endpoint(alice, mfa):
    from urllib.parse import urlencode

    signed_in_account(mfa)  # the page has made its client
    response = mfa.http.get("/authorize?" + urlencode({
        "response_type": "code", "client_id": "idp-account", "scope": "openid",
        "redirect_uri": "http://localhost/account/callback", "response_mode": "form_post",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256"}))
    assert response.status_code == 400
    assert "go to your account page" in text(response)


def test_set_up_a_new_method_is_not_shown_to_the_password_alone(new_user, cohort_rp, mfa,
                                                                browser):
    enroll_by_email(browser(), cohort_rp[0])
    account = db.session.get(MfaAccount, new_user.id)
    account.recovery_used_at = utcnow()
    db.session.commit()
    aal2 = '{"id_token": {"acr": {"essential": true, "values": ' \
           '["http://idmanagement.gov/ns/assurance/aal/2"]}}}'
    page = mfa.start(cohort_rp[0], claims=aal2)
    assert page.status_code == 302  # back to the app, unmet: no page of the account
    assert "unmet_authentication_requirements" in page.headers["Location"]


def test_a_long_name_and_odd_ids_are_handled(alice, mfa):
    page = signed_in_account(mfa)
    response = post(mfa, page, "/account/profile", {"profile-given_name": "G" * 100,
                                                    "profile-family_name": "F" * 100})
    assert response.status_code == 302
    assert len(db.session.get(User, alice.id).name) <= 200
    token = re.search(r'name="profile-csrf_token" type="hidden" value="([^"]+)"',
                      page.get_data(as_text=True)).group(1)
    for data in ({"devices-device_id": "9" * 30, "devices-forget_one": "1"},
                 {"devices-device_id": "1\x00", "devices-forget_one": "1"}):
        answer = mfa.http.post("/mfa/account/devices", data={"devices-csrf_token": token, **data})
        assert answer.status_code == 400
    answer = mfa.http.post("/mfa/account/methods", data={
        "mfa-csrf_token": token, "mfa-kind": "sms\x00", "mfa-remove": "1"})
    assert answer.status_code == 400


def test_two_removals_at_once_leave_a_mandatory_account_one_method(alice, mfa, app):
    from tests.concurrency import run_in_threads
    from tests.mfa_journeys import copy_browser

    db.session.add(MfaFactor(user_id=alice.id, kind="email", destination="alice@example.com"))
    db.session.commit()
    page = signed_in_account(mfa)
    tabs = [copy_browser(app, mfa) for _ in range(2)]
    source = page.get_data(as_text=True)
    match = re.search(r'<form method="post" action="/mfa/account/methods"[^>]*>(.*?)</form>',
                      source, re.S)
    token = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                            match.group(1)))["mfa-csrf_token"]

    def remove(i):
        return tabs[i].http.post("/mfa/account/methods", data={
            "mfa-csrf_token": token, "mfa-kind": ["sms", "email"][i], "mfa-remove": "1"})

    responses = run_in_threads(2, remove)
    assert all(r.status_code == 302 for r in responses), [r.status_code for r in responses]
    db.session.expire_all()
    assert len(db.session.scalars(db.select(MfaFactor).filter_by(user_id=alice.id)).all()) == 1


def test_another_site_cannot_start_modify_mfa_options_and_its_passcode(alice, mfa):
    signed_in_account(mfa)
    age_send_counters(3600)
    texts = len(mfa.sms_messages())
    # A link on another site: a GET names no intent.
    page = mfa.go(mfa.http.get("/account/sign-in?intent=mfa_modify"))
    assert heading(page) == "Your Account"
    # A form on another site has no CSRF token.
    assert mfa.http.post("/account/sign-in", data={"intent": "mfa_modify"}).status_code == 400
    assert len(mfa.sms_messages()) == texts


def test_email_changes_are_limited_per_account(alice, mfa):
    page = signed_in_account(mfa)
    for number in range(5):
        response = post(mfa, page, "/account/email", {"email-email": f"a{number}@new.example"})
        assert response.status_code == 302
    response = post(mfa, page, "/account/email", {"email-email": "a9@new.example"})
    assert response.status_code == 429
    assert "Too many requests" in text(response)
    assert not [m for m in mfa.mail.messages if "a9@new.example" in m.rcpt_tos]
