"""The hosted sign-in pages: the password form, the session cookie, single sign-on, the
per-client Terms and Conditions, and what a person sees when a sign-in link is stale."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from argon2 import PasswordHasher
from sqlalchemy import update

from idp import passwords
from idp.extensions import db
from idp.models import PendingAuthorization, SsoSession, User
from idp.timeutil import utcnow
from tests.conftest import PASSWORD, OidcActions, forms, make_client, make_user

CORE_ONLY = {"IDP_PLUGINS": ""}
COOKIE = "idp_session"


@pytest.fixture
def app_config():
    # The core's own sign-in: password, consent, terms (no plugin steps).
    return dict(CORE_ONLY)


# --- helpers --------------------------------------------------------------------------


class PageParser(HTMLParser):
    """Labels (text -> for), inputs (id -> attrs), links (text -> href), alerts (texts)."""

    def __init__(self):
        super().__init__()
        self.labels: dict[str, str | None] = {}
        self.inputs: dict[str, dict] = {}
        self.buttons: list[str] = []
        self.links: dict[str, str] = {}
        self.alerts: list[str] = []
        self._open: list[tuple[str, dict, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input":
            if attrs.get("id"):
                self.inputs[attrs["id"]] = attrs
            if attrs.get("type") == "submit":
                self.buttons.append(attrs.get("value", ""))
            return
        if tag in ("label", "a", "button") or attrs.get("role") == "alert":
            self._open.append((tag, attrs, []))

    def handle_data(self, data):
        for _, _, texts in self._open:
            texts.append(data)

    def handle_endtag(self, tag):
        if not self._open or self._open[-1][0] != tag:
            return
        _, attrs, texts = self._open.pop()
        text = " ".join("".join(texts).split())
        if attrs.get("role") == "alert":
            self.alerts.append(text)
        if tag == "label":
            self.labels[text] = attrs.get("for")
        elif tag == "a":
            self.links[text] = attrs.get("href")
        elif tag == "button":
            self.buttons.append(text)


def parse(response) -> PageParser:
    parser = PageParser()
    parser.feed(response.get_data(as_text=True))
    return parser


def sign_in_page(oidc, rp, **params):
    response = oidc.authorize(rp, **params)
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path.startswith("/signin/")
    return oidc.http.get(response.headers["Location"])


def submit_password(oidc, page, username, password):
    return oidc.submit(page, {"username": username, "password": password}, button="submit")


def callback(response) -> dict:
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    assert location.startswith("https://rp.example/cb"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def cookie_value(http) -> str | None:
    cookie = http.get_cookie(COOKIE)
    return cookie.value if cookie else None


def cookie_payload(app, value: str) -> dict:
    return app.session_interface.get_signing_serializer(app).loads(value)


def set_cookie_header(response) -> str:
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "=")]
    assert headers, response.headers
    return headers[-1]


def new_browser(app, cookie: str | None = None) -> OidcActions:
    http = app.test_client()
    if cookie is not None:
        http.set_cookie(COOKIE, cookie)
    return OidcActions(http)


def token_claims(http, actions, rp, secret, code) -> dict:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    response = actions.token(rp, secret, code)
    assert response.status_code == 200, response.get_json()
    keyset = KeySet.import_key_set(http.get("/jwks.json").get_json())
    return jwt.decode(response.get_json()["id_token"], keyset).claims


def pending_id(response) -> str:
    return urlsplit(response.headers["Location"]).path.rsplit("/", 1)[1]


# --- the sign-in form -----------------------------------------------------------------


def test_sign_in_page_has_user_name_password_and_log_in(oidc, rp):
    page = parse(sign_in_page(oidc, rp[0]))
    assert page.labels.get("User Name") in page.inputs
    assert page.labels.get("Password") in page.inputs
    assert page.inputs[page.labels["Password"]]["type"] == "password"
    assert page.inputs[page.labels["User Name"]]["name"] == "username"
    assert "Log In" in page.buttons


def test_sign_in_page_shows_the_application_being_signed_in_to(client, oidc, app):
    branded, _ = make_client(display_name="Click-N-Ship", description="Ship packages online.")
    html = sign_in_page(oidc, branded).get_data(as_text=True)
    assert "Click-N-Ship" in html
    assert "Ship packages online." in html


@pytest.mark.parametrize(("text", "button"), [("Forgot your username?", "Send"),
                                              ("Forgot your password?", "Send Reset Link"),
                                              ("Create New Account", "Create Account")])
def test_sign_in_page_links_lead_to_the_account_pages(client, oidc, rp, text, button):
    href = parse(sign_in_page(oidc, rp[0])).links.get(text)
    assert href, f"no link {text!r}"
    response = client.get(href)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f"<h1>{text}</h1>" in html
    assert f'value="{button}"' in html
    assert "Back to Sign In" in html


def test_unknown_user_and_wrong_password_get_the_same_answer(oidc, rp, alice):
    page = sign_in_page(oidc, rp[0])
    unknown = submit_password(oidc, page, "nobody-here", PASSWORD)
    wrong = submit_password(oidc, page, "alice", "not the password")
    assert unknown.status_code == wrong.status_code == 400
    assert parse(unknown).alerts == parse(wrong).alerts
    assert parse(wrong).alerts == ["The user name or password you entered is incorrect."]

    def normalised(response, username):
        html = response.get_data(as_text=True).replace(f'value="{username}"', 'value="U"')
        return re.sub(r'id="csrf_token" name="csrf_token" type="hidden" value="[^"]*"',
                      "CSRF", html)

    assert normalised(unknown, "nobody-here") == normalised(wrong, "alice")


def test_sign_in_page_focuses_the_first_empty_field_and_renders_no_placeholder_values(
        oidc, rp):
    page = sign_in_page(oidc, rp[0])
    parsed = parse(page)
    assert "autofocus" in parsed.inputs["username"]
    assert "autofocus" not in parsed.inputs["password"]
    assert '="None"' not in page.get_data(as_text=True)
    hinted = parse(sign_in_page(oidc, rp[0], login_hint="alice"))
    assert "autofocus" not in hinted.inputs["username"]
    assert hinted.inputs["password"]["autofocus"] in (None, "", "autofocus")


def test_disabled_account_gets_the_same_answer_as_a_wrong_password(oidc, rp, alice):
    alice.disabled = True
    db.session.commit()
    response = submit_password(oidc, sign_in_page(oidc, rp[0]), "alice", PASSWORD)
    assert response.status_code == 400
    assert parse(response).alerts == ["The user name or password you entered is incorrect."]


def test_failed_sign_in_keeps_the_user_name_and_clears_the_password(oidc, rp, alice):
    response = submit_password(oidc, sign_in_page(oidc, rp[0]), "alice", "wrong password")
    page = parse(response)
    assert page.inputs[page.labels["User Name"]].get("value") == "alice"
    assert not page.inputs[page.labels["Password"]].get("value")
    assert "wrong password" not in response.get_data(as_text=True)


def test_empty_fields_are_named_next_to_the_field_and_in_an_alert(oidc, rp, alice):
    response = submit_password(oidc, sign_in_page(oidc, rp[0]), "", "")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Enter your user name." in html
    assert "Enter your password." in html
    assert parse(response).alerts


def test_post_without_csrf_token_is_refused_and_signs_nobody_in(app, oidc, rp, alice):
    page = sign_in_page(oidc, rp[0])
    action = forms(page.get_data(as_text=True))[0]["action"] or page.request.path
    response = oidc.http.post(action, data={"username": "alice", "password": PASSWORD,
                                            "submit": "Log In"})
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert parse(response).alerts
    assert "Page expired" in response.get_data(as_text=True)
    assert "sso" not in cookie_payload(app, cookie_value(oidc.http))
    assert callback(oidc.authorize(rp[0], prompt="none"))["error"] == "login_required"


def test_post_with_another_browsers_csrf_token_is_refused(app, oidc, rp, alice):
    other = new_browser(app)
    foreign = forms(sign_in_page(other, rp[0]).get_data(as_text=True))[0]["fields"]
    page = sign_in_page(oidc, rp[0])
    action = forms(page.get_data(as_text=True))[0]["action"] or page.request.path
    response = oidc.http.post(action, data={"username": "alice", "password": PASSWORD,
                                            "csrf_token": foreign["csrf_token"]})
    assert response.status_code == 400
    assert callback(oidc.authorize(rp[0], prompt="none"))["error"] == "login_required"


def test_user_names_are_case_sensitive(client, oidc, rp, alice):
    response = submit_password(oidc, sign_in_page(oidc, rp[0]), "Alice", PASSWORD)
    assert response.status_code == 400
    assert parse(response).alerts == ["The user name or password you entered is incorrect."]


def test_accounts_differing_only_in_case_each_sign_in_as_themselves(app, rp):
    lower = make_user("bob", password="lower-case bob's password")
    upper = make_user("Bob", password="upper-case Bob's password")
    app_client, secret = rp
    for user, password in ((lower, "lower-case bob's password"),
                           (upper, "upper-case Bob's password")):
        browser = new_browser(app)
        params = browser.sign_in(app_client, username=user.username, password=password)
        assert token_claims(browser.http, browser, app_client, secret,
                            params["code"])["sub"] == user.sub


def test_an_account_signs_in_only_with_its_own_password(app, oidc, rp, alice):
    bob = make_user("bob", password="bob's own password")
    response = submit_password(oidc, sign_in_page(oidc, rp[0]), "alice", "bob's own password")
    assert response.status_code == 400
    response = submit_password(oidc, sign_in_page(oidc, rp[0]), "bob", PASSWORD)
    assert response.status_code == 400
    app_client, secret = rp
    params = oidc.sign_in(app_client, username="bob", password="bob's own password")
    assert token_claims(oidc.http, oidc, app_client, secret, params["code"])["sub"] == bob.sub


def test_sign_in_rehashes_a_password_hashed_with_old_parameters(oidc, rp):
    user = make_user("carol")
    old_hash = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=2).hash(PASSWORD)
    user.password_hash = old_hash
    db.session.commit()
    assert passwords.needs_rehash(old_hash)
    # A failed attempt leaves the hash alone.
    submit_password(oidc, sign_in_page(oidc, rp[0]), "carol", "wrong password")
    db.session.expire_all()
    assert db.session.get(User, user.id).password_hash == old_hash
    assert oidc.sign_in(rp[0], username="carol")["code"]
    db.session.expire_all()
    new_hash = db.session.get(User, user.id).password_hash
    assert new_hash != old_hash
    assert not passwords.needs_rehash(new_hash)
    assert passwords.verify_password(new_hash, PASSWORD)


def test_sign_in_keeps_a_current_hash(oidc, rp, alice):
    before = alice.password_hash
    oidc.sign_in(rp[0])
    db.session.expire_all()
    assert db.session.get(User, alice.id).password_hash == before


# --- the session cookie -----------------------------------------------------------------


def test_session_cookie_is_httponly_and_samesite_lax(oidc, rp, alice):
    response = oidc.login(oidc.authorize(rp[0]))
    header = set_cookie_header(response)
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=lax"
    assert "secure" not in attributes  # the issuer is http://localhost in these tests


@pytest.mark.parametrize("app_config", [{**CORE_ONLY, "IDP_ISSUER": "https://localhost"}])
def test_session_cookie_is_secure_when_the_issuer_is_https(client, rp, app_config):
    response = OidcActions(client).authorize(rp[0])
    header = set_cookie_header(response).lower()
    assert "; secure" in header
    assert "; httponly" in header
    assert "samesite=lax" in header


def test_session_cookie_holds_only_opaque_values(app, oidc, rp, alice):
    oidc.sign_in(rp[0])
    payload = cookie_payload(app, cookie_value(oidc.http))
    assert set(payload) <= {"sso", "browser", "csrf_token", "_permanent"}
    assert "sso" in payload
    session_row = db.session.scalar(db.select(SsoSession).filter_by(user_id=alice.id))
    identifying = {str(alice.id), alice.sub, alice.username, alice.email, session_row.sid,
                   session_row.secret_digest}
    for key, value in payload.items():
        if key == "_permanent":
            continue
        assert isinstance(value, str)
        assert len(value) >= 32
        assert value not in identifying
        assert not any(text in value for text in identifying if len(text) > 3)


def test_session_cookie_value_rotates_at_sign_in(app, oidc, rp, alice):
    oidc.authorize(rp[0])
    before_login = cookie_value(oidc.http)
    assert "sso" not in cookie_payload(app, before_login)
    oidc.sign_in(rp[0])
    after_login = cookie_value(oidc.http)
    assert after_login != before_login
    # A cookie captured before the sign-in does not carry the session.
    stale = new_browser(app, before_login)
    assert callback(stale.authorize(rp[0], prompt="none"))["error"] == "login_required"
    # The current cookie does (same browser id, so the transplant itself works).
    current = new_browser(app, after_login)
    assert callback(current.authorize(rp[0], prompt="none"))["code"]


def test_session_secret_rotates_at_every_password_check(app, oidc, rp, alice):
    oidc.sign_in(rp[0])
    first = cookie_value(oidc.http)
    oidc.sign_in(rp[0], prompt="login")
    second = cookie_value(oidc.http)
    assert cookie_payload(app, first)["sso"] != cookie_payload(app, second)["sso"]
    stale = new_browser(app, first)
    assert callback(stale.authorize(rp[0], prompt="none"))["error"] == "login_required"
    assert callback(new_browser(app, second).authorize(rp[0], prompt="none"))["code"]


def test_sign_in_as_another_user_ends_the_first_users_session(app, oidc, rp, alice):
    make_user("bob")
    oidc.sign_in(rp[0])
    alice_cookie = cookie_value(oidc.http)
    oidc.sign_in(rp[0], prompt="login", username="bob")
    stale = new_browser(app, alice_cookie)
    assert callback(stale.authorize(rp[0], prompt="none"))["error"] == "login_required"


# --- single sign-on ---------------------------------------------------------------------


def test_second_client_signs_in_without_the_password_page(oidc, rp, alice):
    first_client, first_secret = rp
    second_client, second_secret = make_client()
    first = oidc.sign_in(first_client)
    first_claims = token_claims(oidc.http, oidc, first_client, first_secret, first["code"])
    response = oidc.authorize(second_client)
    second = callback(response)  # straight back to the client: no page at all
    second_claims = token_claims(oidc.http, oidc, second_client, second_secret,
                                 second["code"])
    assert second_claims["sub"] == first_claims["sub"]
    assert second_claims["sid"] == first_claims["sid"]
    assert second_claims["amr"] == ["pwd"]


def test_another_browser_does_not_share_the_session(app, oidc, rp, alice):
    oidc.sign_in(rp[0])
    other = new_browser(app)
    response = other.authorize(rp[0])
    assert urlsplit(response.headers["Location"]).path.startswith("/signin/")


# --- Terms and Conditions ---------------------------------------------------------------


def terms_page(oidc, response):
    page = oidc.follow(response, answer_pages=False)
    assert page.status_code == 200, page.status_code
    assert "<h1>Terms and Conditions</h1>" in page.get_data(as_text=True)
    return page


def test_terms_appear_after_the_password_once_per_client(oidc, alice):
    with_terms, _ = make_client(terms_text="Ship only legal things.")
    page = terms_page(oidc, oidc.login(oidc.authorize(with_terms)))
    html = page.get_data(as_text=True)
    assert "Ship only legal things." in html
    assert "I Agree" in parse(page).buttons
    assert callback(oidc.follow(oidc.submit(page, button="agree")))["code"]
    # Accepted once: the next sign-in to that client shows no page.
    assert callback(oidc.authorize(with_terms))["code"]
    assert callback(oidc.follow(oidc.login(oidc.authorize(with_terms, prompt="login")),
                                answer_pages=False))["code"]


def test_no_terms_page_for_a_client_without_terms(oidc, rp, alice):
    response = oidc.follow(oidc.login(oidc.authorize(rp[0])), answer_pages=False)
    assert callback(response)["code"]


def test_terms_appear_when_single_sign_on_skips_the_password(oidc, rp, alice):
    oidc.sign_in(rp[0])
    with_terms, _ = make_client(terms_text="Read the mail preview rules.")
    response = oidc.authorize(with_terms)
    assert urlsplit(response.headers["Location"]).path.startswith("/terms/")
    page = terms_page(oidc, response)
    assert callback(oidc.follow(oidc.submit(page, button="agree")))["code"]


def test_terms_are_asked_per_client(oidc, alice):
    first, _ = make_client(terms_text="First terms.")
    second, _ = make_client(terms_text="First terms.")
    oidc.sign_in(first)
    terms_page(oidc, oidc.authorize(second))


def test_changed_terms_are_asked_again(oidc, alice):
    with_terms, _ = make_client(terms_text="Version 1.")
    oidc.sign_in(with_terms)
    with_terms.terms_text = "Version 2."
    db.session.commit()
    page = terms_page(oidc, oidc.authorize(with_terms))
    assert "Version 2." in page.get_data(as_text=True)


def test_declining_terms_answers_access_denied_and_asks_again(oidc, alice):
    with_terms, _ = make_client(terms_text="Take it or leave it.")
    page = terms_page(oidc, oidc.login(oidc.authorize(with_terms)))
    params = callback(oidc.submit(page, button="decline"))
    assert params["error"] == "access_denied"
    terms_page(oidc, oidc.authorize(with_terms))


def test_terms_cannot_be_skipped_by_resuming_the_sign_in(oidc, alice):
    with_terms, _ = make_client(terms_text="No shortcuts.")
    response = oidc.login(oidc.authorize(with_terms))
    terms_page(oidc, response)
    resumed = oidc.http.get(f"/authorize/resume/{pending_id(response)}")
    assert urlsplit(resumed.headers["Location"]).path.startswith("/terms/")


def test_terms_come_after_consent(oidc, alice):
    with_terms, _ = make_client(terms_text="Last of all.")
    page = oidc.follow(oidc.login(oidc.authorize(with_terms, scope="openid offline_access")),
                       answer_pages=False)
    assert "<h1>Allow access</h1>" in page.get_data(as_text=True)
    page = terms_page(oidc, oidc.submit(page, button="allow"))
    assert callback(oidc.follow(oidc.submit(page, button="agree")))["code"]


# --- stale or foreign sign-in links -----------------------------------------------------


def test_pending_sign_in_opened_in_another_browser_shows_an_explanatory_page(app, oidc, rp,
                                                                             alice):
    response = oidc.authorize(rp[0])
    other = new_browser(app)
    for url in (response.headers["Location"], f"/authorize/resume/{pending_id(response)}"):
        page = other.http.get(url)
        assert page.status_code == 400
        alerts = parse(page).alerts
        assert alerts and "another browser" in alerts[0]
        assert "sign in again" in alerts[0]
    # The other browser cannot use it by posting either.
    foreign = other.http.post(response.headers["Location"],
                              data={"username": "alice", "password": PASSWORD})
    assert foreign.status_code == 400
    assert callback(other.authorize(rp[0], prompt="none"))["error"] == "login_required"
    # The browser that started it still can.
    assert callback(oidc.follow(oidc.login(response)))["code"]


def test_expired_pending_sign_in_shows_an_explanatory_page(oidc, rp, alice):
    response = oidc.authorize(rp[0])
    db.session.execute(update(PendingAuthorization).values(
        expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    page = oidc.http.get(response.headers["Location"])
    assert page.status_code == 400
    alerts = parse(page).alerts
    assert alerts and "expired" in alerts[0]
    assert "sign in again" in alerts[0]
    assert "Log In" not in parse(page).buttons


def test_finished_pending_sign_in_shows_an_explanatory_page(oidc, rp, alice):
    response = oidc.authorize(rp[0])
    callback(oidc.follow(oidc.login(response)))
    for url in (response.headers["Location"], f"/authorize/resume/{pending_id(response)}"):
        page = oidc.http.get(url)
        assert page.status_code == 400
        alerts = parse(page).alerts
        assert alerts and "finished already" in alerts[0]


def test_unknown_pending_sign_in_shows_an_explanatory_page(client):
    page = client.get("/signin/does-not-exist")
    assert page.status_code == 400
    assert "sign in again" in parse(page).alerts[0]
