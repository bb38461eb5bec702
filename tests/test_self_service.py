"""Create New Account, Forgot your username?, Forgot your password? and the account email's
verification, walked as a browser would with the MFA plugin on, email through a real SMTP
server on loopback."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest

from idp.extensions import db
from idp.models import AccountLink, AuditEvent, SsoSession, Token, User
from idp.timeutil import utcnow
from plugins.mfa.models import RememberedDevice
from tests.conftest import forms, make_user
from tests.mfa_support import *  # noqa: F403 - fixtures: mail, sms, app_config, mfa
from tests.mfa_support import ACR_MFA, alert_text, heading

NEW_PASSWORD = "plum orchard lantern 42"
ISSUER = "http://localhost"


def form_fields(page, index=0) -> tuple[str, dict]:
    form = forms(page.get_data(as_text=True))[index]
    query = page.request.query_string.decode()
    # A form without an action posts to the page's own address, query string included.
    return form["action"] or page.request.path + (f"?{query}" if query else ""), form["fields"]


def send_form(http, page, data, index=0, keep=("csrf_token",)):
    """Submit form ``index`` with its CSRF token and ``data``; the answer is read whole (and
    closed, so that what the page does after answering has run)."""
    action, fields = form_fields(page, index)
    sent = {k: v for k, v in fields.items() if any(k.endswith(name) for name in keep)}
    sent.update(data)
    return http.post(action, data=sent, buffered=True)


def go(http, response, limit=10):
    for _ in range(limit):
        if response.status_code != 302:
            return response
        location = response.headers["Location"]
        if not location.startswith("/") and not location.startswith(ISSUER):
            return response
        response = http.get(location.replace(ISSUER, ""), buffered=True)
    raise AssertionError("too many redirects")


def link_in(message, path: str) -> str:
    match = re.search(re.escape(ISSUER + path) + r"\?token=\S+", message.text)
    assert match, message.text
    return match.group(0).replace(ISSUER, "")


def verify(http, link):
    """Open the emailed verification link and press its button."""
    page = http.get(link)
    if heading(page) != "Verify Your Email Address":
        return page
    return send_form(http, page, {"submit": "Verify My Email"})


def emails_to(mail, address):
    return [m for m in mail.messages if address in m.rcpt_tos]


def sign_in_page(mfa, rp):
    response = mfa.authorize(rp)
    assert response.status_code == 302
    page = mfa.http.get(response.headers["Location"])
    assert heading(page) == "Sign In"
    return page


def alert(response) -> str:
    return html.unescape(alert_text(response))


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def link_of(page, text: str) -> str:
    match = re.search(r'<a [^>]*href="([^"]+)"[^>]*>\s*' + re.escape(text),
                      page.get_data(as_text=True))
    assert match, f"no link {text!r}"
    return match.group(1).replace("&amp;", "&")


@pytest.fixture
def cns(cohort_rp):
    return cohort_rp[0]


@pytest.fixture
def cns_secret(cohort_rp):
    return cohort_rp[1]


ACCOUNT = {"username": "Bea.Lopez", "password": "saffron meadow kettle",
           "confirm": "saffron meadow kettle", "email": "bea@example.com",
           "given_name": "Bea", "family_name": "Lopez", "submit": "Create Account"}


def create_account(mfa, rp, **changes):
    page = mfa.http.get(link_of(sign_in_page(mfa, rp), "Create New Account"))
    assert heading(page) == "Create New Account"
    return page, send_form(mfa.http, page, {**ACCOUNT, **changes})


# --- Create New Account ---------------------------------------------------------------------


def test_sign_in_page_links_to_the_three_account_pages(mfa, cns):
    page = sign_in_page(mfa, cns)
    for text, title in [("Forgot your username?", "Forgot your username?"),
                        ("Forgot your password?", "Forgot your password?"),
                        ("Create New Account", "Create New Account")]:
        target = mfa.http.get(link_of(page, text))
        assert target.status_code == 200
        assert heading(target) == title
        assert target.headers["Cache-Control"] == "no-store"
        assert "Back to Sign In" in target.get_data(as_text=True)


def test_new_account_verifies_its_email_then_must_enroll_and_returns_to_the_app(
        app, mfa, mail, cns, cns_secret):
    _, response = create_account(mfa, cns)
    page = go(mfa.http, response)
    assert heading(page) == "Confirm Your Email"
    assert "b**@example.com" in page.get_data(as_text=True) or "bea" not in page.get_data(
        as_text=True)
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(username="Bea.Lopez"))
        assert user.must_verify_email and not user.email_verified
        assert user.given_name == "Bea" and user.family_name == "Lopez"
        assert user.name == "Bea Lopez"
        assert utcnow() - user.created_at < timedelta(minutes=1)
        assert db.session.scalar(db.select(AuditEvent).filter_by(
            event="account_created", user_id=user.id)) is not None

    # Continue before the link is opened: the page says what is missing.
    early = send_form(mfa.http, page, {"k-submit": "Continue"})
    assert "haven't seen the link opened" in alert(early)

    [message] = emails_to(mail, "bea@example.com")
    verified = verify(mfa.http, link_in(message, "/account/verify-email"))
    assert heading(verified) == "Thank you for verifying your email"
    page = go(mfa.http, mfa.http.get(link_of(verified, "Continue")))
    # Created after the cutoff: enrollment is mandatory, and the email is verified already.
    assert heading(page) == "Multifactor Authentication (MFA)"
    assert "Not Now" not in page.get_data(as_text=True)
    page = mfa.enroll_in_mfa(page)
    page = mfa.choose_method(page, "sms")
    page = mfa.submit_passcode(mfa.enter_phone(page), mfa.sms_passcode())
    params = mfa.finish(mfa.continue_from_recovery_codes(page))
    claims = mfa.id_token_claims(cns, cns_secret, params)
    assert claims["acr"] == ACR_MFA
    with app.app_context():
        assert claims["sub"] == db.session.scalar(
            db.select(User.sub).filter_by(username="Bea.Lopez"))


def test_the_verification_link_works_once(mfa, mail, cns, browser):
    go(mfa.http, create_account(mfa, cns)[1])
    link = link_in(emails_to(mail, "bea@example.com")[0], "/account/verify-email")
    other = browser()
    assert heading(verify(other.http, link)) == "Thank you for verifying your email"
    again = other.http.get(link)
    assert again.status_code == 400 and heading(again) == "Link expired"


def test_opening_the_verification_link_verifies_nothing_until_its_button_is_pressed(
        app, client, mail):
    """Mail scanners open the links of incoming mail: an address is verified only by a
    person pressing the button."""
    send_form(client, client.get("/account/create"), ACCOUNT)
    link = link_in(emails_to(mail, "bea@example.com")[0], "/account/verify-email")
    for _ in range(2):
        page = client.get(link)
        assert heading(page) == "Verify Your Email Address"
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(username="Bea.Lopez"))
        assert user.must_verify_email and not user.email_verified
    assert heading(verify(client, link)) == "Thank you for verifying your email"


def test_an_unverified_account_cannot_reach_an_app_from_another_browser(
        app, mfa, mail, cns, browser):
    go(mfa.http, create_account(mfa, cns)[1])
    other = browser()
    page = other.start(cns, username="Bea.Lopez", password=ACCOUNT["password"])
    assert heading(page) == "Confirm Your Email"
    # A link is still live: arriving again sends no second one.
    assert len(emails_to(mail, "bea@example.com")) == 1
    page = send_form(other.http, page, {"n-submit": "Send a New Link"}, index=1)
    assert len(emails_to(mail, "bea@example.com")) == 2
    first, second = (link_in(m, "/account/verify-email")
                     for m in emails_to(mail, "bea@example.com"))
    assert heading(other.http.get(first)) == "Link expired"  # the new link ended it
    assert heading(verify(other.http, second)) == "Thank you for verifying your email"


def test_a_typo_in_the_email_is_corrected_before_verification(app, mfa, mail, cns):
    page = go(mfa.http, create_account(mfa, cns, email="bea@exmaple.com")[1])
    page = mfa.http.get(link_of(page, "Wrong address?"))
    page = go(mfa.http, send_form(mfa.http, page, {"e-email": "bea@example.com",
                                                   "e-submit": "Send Email Link"}, index=2))
    assert heading(page) == "Confirm Your Email"
    old = link_in(emails_to(mail, "bea@exmaple.com")[0], "/account/verify-email")
    assert heading(mfa.http.get(old)) == "Link expired"
    new = link_in(emails_to(mail, "bea@example.com")[0], "/account/verify-email")
    assert heading(verify(mfa.http, new)) == "Thank you for verifying your email"
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(username="Bea.Lopez"))
        assert user.email == "bea@example.com" and user.email_verified


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"username": "alice"}, "username", "This user name is taken"),
    ({"username": "bea lopez"}, "username", "letters, digits"),
    ({"username": "b"}, "username", "3 to 64 characters"),
    ({"password": "short", "confirm": "short"}, "password", "at least 8 characters"),
    ({"password": "password123", "confirm": "password123"}, "password", "too common"),
    ({"password": "Bea.Lopez-rules", "confirm": "Bea.Lopez-rules"}, "password",
     "must not contain your user name"),
    ({"confirm": "saffron meadow kettlf"}, "confirm", "don't match"),
    ({"email": "bea-at-example.com"}, "email", "email address like"),
])
def test_create_account_refuses_bad_input_next_to_the_field_keeping_the_rest(
        app, mfa, cns, changes, field, message):
    make_user("alice")
    _, response = create_account(mfa, cns, **changes)
    assert response.status_code == 400
    page = text_of(response)
    assert "Please correct the fields below." in alert(response)
    error = re.search(rf'id="{field}-error">([^<]*)<', page)
    assert error and message in error.group(1), page
    # What the user typed stays, but never a password.
    wanted = {**ACCOUNT, **changes}
    assert f'value="{wanted["email"]}"' in page
    assert wanted["password"] not in page
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(username=wanted["username"])) is None \
            or wanted["username"] == "alice"


def test_control_characters_are_refused_without_an_error_page(app, client, mail):
    page = client.get("/account/create")
    response = send_form(client, page, {**ACCOUNT, "email": "bea\x00@example.com",
                                        "given_name": "B\x00ea"})
    assert response.status_code == 400
    assert "Please correct the fields below." in alert(response)
    for path, data in [("/account/forgot-username", {"email": "a\x00@example.com"}),
                       ("/account/forgot-password", {"username": "al\x00ice"})]:
        answer = send_form(client, client.get(path), data)
        assert answer.status_code in (200, 400)
        assert heading(answer) in ("Check Your Email", "Forgot your username?",
                                   "Forgot your password?")


def test_the_taken_user_name_answer_is_rate_limited_too(app, mfa, cns, browser):
    app.config["IDP_SIGNUP_LIMIT_PER_ADDRESS"] = 2
    make_user("alice")
    for _ in range(2):
        _, response = create_account(browser(), cns, username="alice")
        assert "This user name is taken" in text_of(response)
    _, response = create_account(browser(), cns, username="alice")
    assert response.status_code == 429
    assert "This user name is taken" not in text_of(response)


def test_user_names_are_case_sensitive(app, mfa, cns):
    make_user("bea.lopez")
    _, response = create_account(mfa, cns)
    assert heading(go(mfa.http, response)) == "Confirm Your Email"


def test_self_registration_off_shows_whom_to_contact(app, mfa, cns):
    app.config["IDP_SELF_REGISTRATION"] = False
    page = mfa.http.get(link_of(sign_in_page(mfa, cns), "Create New Account"))
    assert heading(page) == "Create New Account"
    assert "help desk" in page.get_data(as_text=True)
    assert not forms(page.get_data(as_text=True))
    response = mfa.http.post(page.request.path + "?" + page.request.query_string.decode(),
                             data=ACCOUNT)
    assert response.status_code in (200, 400)
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(username="Bea.Lopez")) is None


def test_account_creation_is_rate_limited_per_client_address(app, mfa, cns, browser):
    app.config["IDP_SIGNUP_LIMIT_PER_ADDRESS"] = 1
    go(mfa.http, create_account(mfa, cns)[1])
    _, response = create_account(browser(), cns, username="Bea.Two")
    assert response.status_code == 429
    assert "Too many requests" in alert(response)
    assert 'value="Bea.Two"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(User).filter_by(username="Bea.Two")) is None


def test_create_account_without_a_sign_in_sends_the_link_and_says_where_to_go(
        app, client, mail):
    page = client.get("/account/create")
    assert heading(page) == "Create New Account"
    response = send_form(client, page, ACCOUNT)
    assert response.status_code == 200
    assert heading(response) == "Confirm Your Email"
    assert emails_to(mail, "bea@example.com")


# --- Forgot your username? ------------------------------------------------------------------


def ask_username(http, email):
    page = http.get("/account/forgot-username")
    return send_form(http, page, {"email": email, "submit": "Send"})


def visible_text(response) -> str:
    html = re.sub(r'name="csrf_token"[^>]*>', "", response.get_data(as_text=True))
    return re.sub(r"\s+", " ", html)


def test_forgot_username_emails_every_user_name_of_the_address(app, client, mail):
    make_user("carla", email="Carla@Example.com")
    make_user("carla-work", email="carla@example.com")
    response = ask_username(client, "carla@example.com")
    assert response.status_code == 200
    assert heading(response) == "Check Your Email"
    messages = mail.messages
    assert sum(len(m.rcpt_tos) for m in messages) == 2
    text = "\n".join(m.text for m in messages)
    assert "carla-work" in text and re.search(r"^\s+carla\r?$", text, re.M)


def test_forgot_username_answers_the_same_for_an_unknown_address(app, client, mail):
    make_user("carla", email="carla@example.com")
    known = ask_username(client, "carla@example.com")
    unknown = ask_username(client, "nobody@example.com")
    assert (known.status_code, visible_text(known)) == (unknown.status_code,
                                                        visible_text(unknown))
    assert not emails_to(mail, "nobody@example.com")


def test_forgot_username_is_rate_limited_per_address(app, client, mail):
    app.config["IDP_RECOVERY_LIMIT_PER_IDENTIFIER"] = 2
    make_user("carla", email="carla@example.com")
    for _ in range(2):
        assert ask_username(client, "carla@example.com").status_code == 200
    refused = ask_username(client, "CARLA@example.com")
    assert refused.status_code == 429 and "Too many requests" in alert(refused)
    assert len(emails_to(mail, "carla@example.com")) == 2
    assert ask_username(client, "other@example.com").status_code == 200


# --- Forgot your password? ------------------------------------------------------------------


def ask_reset(http, identifier, path="/account/forgot-password"):
    page = http.get(path)
    return send_form(http, page, {"username": identifier, "submit": "Send Reset Link"})


def reset_with(http, link, password=NEW_PASSWORD, confirm=None):
    page = http.get(link)
    assert page.headers["Cache-Control"] == "no-store"
    if heading(page) != "Reset Your Password":
        return page
    return send_form(http, page, {"password": password, "confirm": confirm or password,
                                  "submit": "Reset Password"})


def test_password_reset_ends_everything_and_signs_no_one_in(
        app, mfa, mail, cns, cns_secret, new_user, browser):
    # Alice is signed in with MFA and a remembered device, with tokens at the app.
    params = mfa.enroll_by_sms(cns)
    assert mfa.id_token_claims(cns, cns_secret, params)["acr"] == ACR_MFA
    with app.app_context():
        user_id = new_user.id
        assert db.session.scalar(db.select(Token).filter_by(user_id=user_id)) is not None

    someone = browser()
    answer = ask_reset(someone.http, "alice")
    assert heading(answer) == "Check Your Email"
    reset_mail = [m for m in emails_to(mail, "alice@example.com")
                  if "/account/reset-password" in m.text][-1]
    done = reset_with(someone.http, link_in(reset_mail, "/account/reset-password"))
    assert heading(done) == "Your password has been reset"

    with app.app_context():
        assert db.session.scalar(db.select(SsoSession).filter_by(
            user_id=user_id, ended_at=None)) is None
        assert all(t.revoked_at is not None
                   for t in db.session.scalars(db.select(Token).filter_by(user_id=user_id)))
        events = {e.event: e for e in db.session.scalars(db.select(AuditEvent).filter_by(
            user_id=user_id))}
        assert {"password_reset", "password_changed", "sessions_and_tokens_revoked",
                "devices_forgotten"} <= set(events)
        assert events["password_changed"].detail["source"] == "password_reset"
        assert not db.session.scalars(db.select(RememberedDevice).filter_by(
            user_id=user_id, forgotten_at=None)).all()
    notices = [m for m in emails_to(mail, "alice@example.com")
               if "was changed" in m.text]
    assert notices

    # The reset signed no one in: the old password fails, the new one works and MFA is asked
    # again (the remembered device is forgotten).
    assert heading(mfa.start(cns)) == "Sign In"
    page = mfa.start(cns, password=NEW_PASSWORD)
    assert heading(page) == "Multifactor Authentication (MFA)"
    assert "Please enter the passcode" in page.get_data(as_text=True)


def test_reset_link_works_once_and_a_newer_one_ends_it(app, client, mail, new_user):
    ask_reset(client, "alice")
    ask_reset(client, "alice@example.com")  # by the address, too
    first, second = (link_in(m, "/account/reset-password")
                     for m in emails_to(mail, "alice@example.com"))
    assert heading(reset_with(client, first)) == "Link expired"
    assert heading(reset_with(client, second)) == "Your password has been reset"
    assert heading(reset_with(client, second, "another fine password")) == "Link expired"


def test_reset_link_expires_after_thirty_minutes(app, client, mail, new_user):
    ask_reset(client, "alice")
    link = link_in(emails_to(mail, "alice@example.com")[0], "/account/reset-password")
    with app.app_context():
        row = db.session.scalar(db.select(AccountLink))
        assert timedelta(minutes=29) < row.expires_at - row.created_at <= timedelta(minutes=30)
        assert row.token_digest not in link and len(row.token_digest) == 64
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert heading(reset_with(client, link)) == "Link expired"


def test_reset_refuses_a_weak_or_mismatched_password_and_keeps_the_link(
        app, client, mail, new_user):
    ask_reset(client, "alice")
    link = link_in(emails_to(mail, "alice@example.com")[0], "/account/reset-password")
    weak = reset_with(client, link, "password1")
    assert weak.status_code == 400 and "too common" in text_of(weak)
    mismatch = reset_with(client, link, NEW_PASSWORD, NEW_PASSWORD + "x")
    assert "don't match" in text_of(mismatch)
    assert heading(reset_with(client, link)) == "Your password has been reset"


def test_forgot_password_answers_the_same_for_unknown_users(app, client, mail, new_user):
    known = ask_reset(client, "alice")
    unknown = ask_reset(client, "nobody")
    unknown_address = ask_reset(client, "nobody@example.com")
    assert (known.status_code, visible_text(known)) == (unknown.status_code,
                                                        visible_text(unknown))
    assert visible_text(unknown) == visible_text(unknown_address)
    assert len(mail.messages) == 1


def test_an_account_whose_email_was_never_verified_gets_no_reminder_nor_reset_link(
        app, client, mail):
    """Anyone may create an account with someone else's address: until it is verified,
    nothing but its verification link goes there."""
    send_form(client, client.get("/account/create"), ACCOUNT)
    assert len(mail.messages) == 1
    assert heading(ask_reset(client, "Bea.Lopez")) == "Check Your Email"
    assert heading(ask_username(client, "bea@example.com")) == "Check Your Email"
    assert len(mail.messages) == 1


def test_a_disabled_account_gets_no_reset_link(app, client, mail):
    make_user("dora").disabled = True
    db.session.commit()
    assert heading(ask_reset(client, "dora")) == "Check Your Email"
    assert not mail.messages


def test_reset_link_notice_goes_to_the_mfa_email_too(app, mfa, mail, cns, new_user,
                                                      browser):
    page = mfa.verify_email_change(mfa.enroll_in_mfa(mfa.start(cns)),
                                   "alice.mfa@example.org")
    mfa.http.get(mfa.email_link("alice.mfa@example.org"))
    mfa.continue_after_link(page)
    ask_reset(browser().http, "alice")
    link = link_in(emails_to(mail, "alice@example.com")[-1], "/account/reset-password")
    reset_with(browser().http, link)
    assert any("was changed" in m.text for m in emails_to(mail, "alice.mfa@example.org"))
    assert any("was changed" in m.text for m in emails_to(mail, "alice@example.com"))


def test_a_worker_loads_the_password_lists_only_when_a_new_password_is_checked(tmp_path):
    # zxcvbn's lists cost 14 MiB per worker; most workers never check a new password.
    import subprocess
    import sys

    code = ("import sys; from idp import create_app; create_app(); "
            "print('zxcvbn' in sys.modules); "
            "from idp.password_policy import problem; problem('amber meadow violin', 'al'); "
            "print('zxcvbn' in sys.modules)")
    env = {"IDP_DATABASE_URL": f"sqlite:///{tmp_path}/idp.db", "PATH": "/usr/bin:/bin",
           "IDP_SECRET_KEY": "x" * 32}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.stdout.split() == ["False", "True"], result.stderr[-2000:]
