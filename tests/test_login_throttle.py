"""Password guessing is slowed down: attempts per user name and per address are limited,
shared by every instance, and an unknown user name is treated like a known one. Every test
runs with the limits in the database and in Redis."""

import pytest

from idp.extensions import db
from idp.models import AuditEvent
from tests.conftest import PASSWORD, forms


@pytest.fixture
def limit_settings():
    return {"IDP_LOGIN_LIMIT_PER_USER": 3, "IDP_LOGIN_LIMIT_PER_ADDRESS": 6}


@pytest.fixture
def app_config(rate_limit_backend, limit_settings):
    return {**rate_limit_backend, **limit_settings}


def attempt(oidc, rp, username, password):
    page = oidc.http.get(oidc.authorize(rp).headers["Location"])
    return oidc.submit(page, {"username": username, "password": password}, button="submit")


def test_fourth_wrong_password_for_a_user_is_refused_without_checking_it(oidc, rp, alice):
    for _ in range(3):
        assert attempt(oidc, rp[0], "alice", "wrong").status_code == 400
    response = attempt(oidc, rp[0], "alice", PASSWORD)
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.get_data(as_text=True)
    assert db.session.scalar(db.select(AuditEvent).filter_by(event="login_throttled"))


def test_unknown_user_names_are_throttled_like_known_ones(oidc, rp, alice):
    for _ in range(3):
        attempt(oidc, rp[0], "nobody", "wrong")
    assert attempt(oidc, rp[0], "nobody", "wrong").status_code == 429


def test_successful_sign_ins_do_not_count_against_the_limit(oidc, rp, alice):
    for _ in range(5):
        response = attempt(oidc, rp[0], "alice", PASSWORD)
        assert response.status_code == 302
        oidc.http.delete_cookie("idp_session")  # a new browser session asks the password again


def test_one_address_guessing_many_user_names_is_stopped(oidc, rp, alice):
    for number in range(6):
        attempt(oidc, rp[0], f"user{number}", "wrong")
    response = attempt(oidc, rp[0], "alice", PASSWORD)
    assert response.status_code == 429


def test_a_throttled_user_name_does_not_affect_another(oidc, rp, alice):
    for _ in range(3):
        attempt(oidc, rp[0], "mallory", "wrong")
    assert attempt(oidc, rp[0], "alice", PASSWORD).status_code == 302


@pytest.mark.parametrize("limit_settings", [{"IDP_PROXY_COUNT": 1,
                                             "IDP_LOGIN_LIMIT_PER_ADDRESS": 2,
                                             "IDP_LOGIN_LIMIT_PER_USER": 50}])
def test_behind_a_proxy_the_forwarded_address_is_limited_not_the_proxy(oidc, rp, alice):
    def attempt_from(address):
        page = oidc.http.get(oidc.authorize(rp[0]).headers["Location"])
        fields = forms(page.get_data(as_text=True))[0]["fields"]
        data = {**fields, "username": "guess", "password": "wrong", "submit": "1"}
        return oidc.http.post(page.request.path, data=data,
                              headers={"X-Forwarded-For": address})

    assert attempt_from("203.0.113.7").status_code == 400
    assert attempt_from("203.0.113.7").status_code == 400
    assert attempt_from("203.0.113.7").status_code == 429
    assert attempt_from("198.51.100.9").status_code == 400
