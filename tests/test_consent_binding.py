"""Consent belongs to the user who gave it: given on a pending sign-in by one user, it never
applies to another user who then signs in on the same pending request."""

from __future__ import annotations

import pytest

from idp.extensions import db
from idp.models import Consent, User
from tests.conftest import PASSWORD, OidcActions, forms, make_client, make_user


def pending_id(page) -> str:
    return page.request.path.rstrip("/").rsplit("/", 1)[-1]


def post_password(http, pid, username, password=PASSWORD):
    page = http.get(f"/signin/{pid}")
    fields = forms(page.get_data(as_text=True))[0]["fields"]
    fields.update(username=username, password=password, submit="1")
    return http.post(f"/signin/{pid}", data=fields)


@pytest.fixture
def offline_rp(app):
    return make_client(client_id="mail", terms_text="Be kind.")


def test_consent_given_by_one_user_never_applies_to_another(app, client, offline_rp):
    make_user("amy")
    make_user("bob")
    rp, _ = offline_rp
    oidc = OidcActions(client)
    page = oidc.http.get(oidc.login(oidc.authorize(rp, scope="openid offline_access"),
                                    "amy").headers["Location"])
    assert "<h1>Allow access</h1>" in page.get_data(as_text=True)
    pid = pending_id(page)
    terms = oidc.http.get(oidc.submit(page, button="allow").headers["Location"])
    assert "<h1>Terms and Conditions</h1>" in terms.get_data(as_text=True)

    answer = post_password(client, pid, "bob")
    page = oidc.follow(answer, answer_pages=False)
    assert "<h1>Allow access</h1>" in page.get_data(as_text=True), page.status_code
    bob = db.session.scalar(db.select(User).filter_by(username="bob"))
    assert db.session.scalar(db.select(Consent).filter_by(user_id=bob.id)) is None




def test_consent_shown_to_one_user_and_pressed_after_another_signed_in_does_nothing(
        app, client, offline_rp):
    """Two tabs of one browser: amy's consent page is open in the first, bob signs in in
    the second; Allow in the first tab records nothing for bob and issues him no code."""
    make_user("amy")
    make_user("bob")
    rp, _ = offline_rp
    first_tab = OidcActions(client)
    page = first_tab.http.get(first_tab.login(
        first_tab.authorize(rp, scope="openid offline_access"), "amy").headers["Location"])
    assert "<h1>Allow access</h1>" in page.get_data(as_text=True)

    second_tab = OidcActions(client)
    second_tab.login(second_tab.authorize(rp, scope="openid", prompt="login"), "bob")

    answer = first_tab.submit(page, button="allow")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/authorize/resume/")
    bob = db.session.scalar(db.select(User).filter_by(username="bob"))
    assert db.session.scalar(db.select(Consent).filter_by(user_id=bob.id)) is None
    page = first_tab.follow(answer, answer_pages=False)
    assert "<h1>Allow access</h1>" in page.get_data(as_text=True)  # bob is asked himself
