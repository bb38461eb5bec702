"""MFA policy (who must enroll, what a session is worth), the ID token's acr and amr, the
acr ladder in discovery, the per-client settings on the admin command, and the IdP with the
plugin switched off."""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from idp import create_app
from idp.auth.acr import amr_for
from idp.config import ConfigError
from idp.extensions import db
from idp.models import Client
from idp.timeutil import epoch, utcnow
from plugins.mfa import policy
from plugins.mfa.factors import FACTORS
from plugins.mfa.policy import REMEMBERED_DEVICE
from tests.conftest import PASSWORD, OidcActions, base_config
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    PHONE_E164,
    age_session_events,
    enroll_by_email,
    pass_challenge,
    sign_out,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import (
    ACR_AAL2,
    ACR_MFA,
    ACR_PWD,
    AFTER_CUTOFF,
    BEFORE_CUTOFF,
    heading,
)

HOUR = 3600


# --- policy: who must enroll ---------------------------------------------------------------


def account(created_at: datetime):
    return SimpleNamespace(created_at=created_at)


def test_enrollment_is_mandatory_from_the_cutoff_day_itself(app):
    assert app.config["IDP_MFA_REQUIRED_FROM"] == "2025-03-06"
    assert policy.enrollment_mandatory(account(datetime(2025, 3, 6, 0, 0)))
    assert policy.enrollment_mandatory(account(datetime(2025, 3, 6, 23, 59)))
    assert policy.enrollment_mandatory(account(AFTER_CUTOFF))


def test_enrollment_is_optional_for_accounts_created_before_the_cutoff(app):
    assert not policy.enrollment_mandatory(account(datetime(2025, 3, 5, 23, 59, 59)))
    assert not policy.enrollment_mandatory(account(BEFORE_CUTOFF))


def test_the_cutoff_is_read_from_idp_mfa_required_from(tmp_path, monkeypatch):
    monkeypatch.setenv("IDP_MFA_REQUIRED_FROM", "2026-01-15")
    other = create_app(base_config(tmp_path, IDP_PLUGINS="plugins.mfa"))
    with other.app_context():
        assert not policy.enrollment_mandatory(account(datetime(2026, 1, 14, 12)))
        assert policy.enrollment_mandatory(account(datetime(2026, 1, 15)))


def test_a_cutoff_that_is_not_a_date_stops_the_start_with_a_clear_message(tmp_path):
    with pytest.raises(ConfigError, match="IDP_MFA_REQUIRED_FROM"):
        create_app(base_config(tmp_path, IDP_PLUGINS="plugins.mfa",
                               IDP_MFA_REQUIRED_FROM="March 6, 2025"))


# --- policy: what a session is worth -------------------------------------------------------


def event(kind: str, ago: float = 0) -> dict:
    """The event a factor records in the SSO session, ``ago`` seconds ago."""
    at = epoch(utcnow()) - int(ago)
    if kind == "pwd":
        return {"method": "pwd", "amr": ["pwd"], "factor": "password", "at": at}
    if kind == REMEMBERED_DEVICE:
        return {"method": REMEMBERED_DEVICE, "amr": [REMEMBERED_DEVICE], "factor": None,
                "at": at}
    return {**FACTORS[kind].event(), "at": at}


def session(*events) -> SimpleNamespace:
    return SimpleNamespace(events=list(events))


def client(**settings) -> SimpleNamespace:
    return SimpleNamespace(settings=settings)


ALLOWS_DEVICES = client(mfa_policy="cohort", remembered_devices=True)
REFUSES_DEVICES = client(mfa_policy="always", remembered_devices=False)


@pytest.mark.parametrize("factor", ["sms", "email", "totp", "recovery"])
def test_mfa_is_met_by_the_password_and_a_second_factor(app, factor):
    assert policy.mfa_met(session(event("pwd"), event(factor)), REFUSES_DEVICES)


def test_mfa_is_not_met_by_the_password_alone(app):
    assert not policy.mfa_met(session(event("pwd")), ALLOWS_DEVICES)
    assert not policy.mfa_met(None, ALLOWS_DEVICES)


def test_a_remembered_device_meets_mfa_only_for_a_client_that_allows_it(app):
    with_device = session(event("pwd"), event(REMEMBERED_DEVICE))
    assert policy.mfa_met(with_device, ALLOWS_DEVICES)
    assert policy.mfa_met(with_device, client())  # allowed unless refused
    assert not policy.mfa_met(with_device, REFUSES_DEVICES)


def test_client_settings_default_to_cohort_policy_and_remembered_devices_allowed(app):
    assert not policy.client_requires_mfa(client())
    assert policy.client_allows_remembered_devices(client())
    assert policy.client_requires_mfa(REFUSES_DEVICES)
    assert not policy.client_allows_remembered_devices(REFUSES_DEVICES)


@pytest.mark.parametrize("factor", ["sms", "totp", "recovery"])
def test_aal2_is_met_by_a_non_email_factor_checked_within_twelve_hours(app, factor):
    assert policy.aal2_met(session(event("pwd", 11 * HOUR), event(factor, 11 * HOUR)),
                           ALLOWS_DEVICES)


@pytest.mark.parametrize("factor", ["sms", "totp", "recovery"])
def test_aal2_is_not_met_twelve_hours_after_the_factor_was_checked(app, factor):
    assert not policy.aal2_met(session(event("pwd"), event(factor, 12 * HOUR + 60)),
                               ALLOWS_DEVICES)


def test_aal2_is_never_met_by_an_email_passcode(app):
    assert not policy.aal2_met(session(event("pwd"), event("email")), ALLOWS_DEVICES)


def test_aal2_is_never_met_by_a_remembered_device_even_where_it_meets_mfa(app):
    with_device = session(event("pwd"), event(REMEMBERED_DEVICE))
    assert policy.mfa_met(with_device, ALLOWS_DEVICES)
    assert not policy.aal2_met(with_device, ALLOWS_DEVICES)


# --- amr ---------------------------------------------------------------------------------


def test_amr_for_password_and_a_remembered_device_has_no_mfa_and_no_otp():
    amr = amr_for(session(event("pwd"), event(REMEMBERED_DEVICE)))
    assert amr == ["pwd", "rdev"]


def test_amr_for_password_and_an_sms_passcode_adds_mfa():
    assert sorted(amr_for(session(event("pwd"), event("sms")))) == ["mfa", "otp", "pwd", "sms"]


def test_amr_for_password_and_an_email_passcode_adds_mfa():
    assert sorted(amr_for(session(event("pwd"), event("email")))) == [
        "email", "mfa", "otp", "pwd"]


def test_amr_never_counts_one_channel_twice():
    # An emailed link (say, for a password reset) and an email passcode are one factor.
    link = {"method": "email_link", "amr": ["email"], "factor": "email", "at": epoch(utcnow())}
    amr = amr_for(session(link, event("email")))
    assert "mfa" not in amr
    assert set(amr) == {"email", "otp"}


def test_amr_for_an_authenticator_app_and_a_recovery_code_uses_their_own_values():
    assert sorted(amr_for(session(event("pwd"), event("totp")))) == ["mfa", "otp", "pwd", "swk"]
    assert sorted(amr_for(session(event("pwd"), event("recovery")))) == ["mfa", "pwd", "rcode"]


def test_amr_lists_each_value_once():
    amr = amr_for(session(event("pwd"), event("sms"), event("totp")))
    assert len(amr) == len(set(amr))
    assert set(amr) == {"pwd", "sms", "otp", "swk", "mfa"}


# --- acr and amr in the ID token ---------------------------------------------------------


def token_claims(browser, rp_and_secret, params) -> dict:
    assert "code" in params, params
    return browser.id_token_claims(*rp_and_secret, params)


def test_with_no_acr_requested_a_passed_challenge_gives_the_mfa_ladder_value(
        mfa, enrolled, cohort_rp):
    params = mfa.finish(pass_challenge(mfa, mfa.start(cohort_rp[0])))
    claims = token_claims(mfa, cohort_rp, params)
    assert claims["acr"] == ACR_MFA
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_with_no_acr_requested_a_password_only_sign_in_gives_the_password_ladder_value(
        mfa, old_user, cohort_rp):
    page = mfa.start(cohort_rp[0], username="olga")
    params = mfa.finish(mfa.not_now(page))
    claims = token_claims(mfa, cohort_rp, params)
    assert claims["acr"] == ACR_PWD
    assert claims["amr"] == ["pwd"]


def test_the_acr_is_the_highest_requested_value_that_is_met(mfa, enrolled, cohort_rp):
    rp = cohort_rp[0]
    page = mfa.start(rp, acr_values=f"{ACR_PWD} {ACR_MFA}")
    params = mfa.finish(pass_challenge(mfa, page))
    assert token_claims(mfa, cohort_rp, params)["acr"] == ACR_MFA
    # The same SMS check also meets the AAL2 alias, the highest asked for here.
    params = mfa.finish(mfa.authorize(rp, acr_values=f"{ACR_MFA} {ACR_AAL2} {ACR_PWD}"))
    assert token_claims(mfa, cohort_rp, params)["acr"] == ACR_AAL2
    # A client that asks only for the password level gets the password level.
    params = mfa.finish(mfa.authorize(rp, acr_values=ACR_PWD))
    claims = token_claims(mfa, cohort_rp, params)
    assert claims["acr"] == ACR_PWD
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_the_aal2_alias_is_reported_only_when_asked_for(mfa, enrolled, cohort_rp):
    params = mfa.finish(pass_challenge(mfa, mfa.start(cohort_rp[0])))
    assert token_claims(mfa, cohort_rp, params)["acr"] == ACR_MFA
    params = mfa.finish(mfa.authorize(cohort_rp[0], acr_values=ACR_AAL2))
    assert token_claims(mfa, cohort_rp, params)["acr"] == ACR_AAL2


def test_an_unknown_requested_acr_is_ignored_for_the_ladder_value(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0], acr_values="urn:example:acr:unknown")
    params = mfa.finish(pass_challenge(mfa, page))
    assert token_claims(mfa, cohort_rp, params)["acr"] == ACR_MFA


def test_a_remembered_device_gives_the_mfa_level_with_rdev_and_without_mfa_in_amr(
        mfa, enrolled, cohort_rp):
    rp = cohort_rp[0]
    mfa.finish(pass_challenge(mfa, mfa.start(rp), remember=True))
    sign_out(mfa)
    params = mfa.finish(mfa.start(rp))
    claims = token_claims(mfa, cohort_rp, params)
    assert claims["acr"] == ACR_MFA
    assert sorted(claims["amr"]) == ["pwd", "rdev"]


# --- an essential acr ---------------------------------------------------------------------


def essential(*values) -> str:
    return json.dumps({"id_token": {"acr": {"essential": True, "values": list(values)}}})


def emails_to(mfa, address) -> int:
    return len([m for m in mfa.mail.messages if address in m.rcpt_tos])


def test_essential_aal2_for_an_account_with_only_email_is_refused_after_the_password(
        mfa, new_user, cohort_rp, browser):
    """OIDC Core 5.5.1.1: an essential acr that cannot be met is a failed authentication.
    No factor of this account meets the alias, so no passcode is sent for nothing."""
    enroll_by_email(browser(), cohort_rp[0])
    sent = emails_to(mfa, "alice@example.com")
    response = mfa.go(mfa.login(mfa.authorize(cohort_rp[0], claims=essential(ACR_AAL2),
                                              state="st-aal2"), "alice", PASSWORD))
    assert response.status_code == 302, heading(response)
    answer = mfa.callback_params(response)
    assert answer["error"] == "unmet_authentication_requirements"
    assert answer["state"] == "st-aal2"
    assert "code" not in answer
    assert emails_to(mfa, "alice@example.com") == sent


def test_essential_aal2_for_an_account_with_only_email_under_prompt_none_is_unmet(
        mfa, new_user, cohort_rp, browser):
    enroll_by_email(browser(), cohort_rp[0])
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    answer = mfa.callback_params(mfa.authorize(cohort_rp[0], prompt="none",
                                               claims=essential(ACR_AAL2)))
    assert answer["error"] == "unmet_authentication_requirements"


def test_essential_aal2_under_prompt_none_that_a_challenge_could_meet_is_interaction_required(
        mfa, enrolled, cohort_rp):
    assert heading(mfa.start(cohort_rp[0])) == CHALLENGE
    answer = mfa.callback_params(mfa.authorize(cohort_rp[0], prompt="none",
                                               claims=essential(ACR_AAL2)))
    assert answer["error"] == "interaction_required"


def test_essential_aal2_for_an_sms_account_is_met_by_the_challenge(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0], claims=essential(ACR_AAL2))
    assert heading(page) == CHALLENGE
    claims = token_claims(mfa, cohort_rp, mfa.finish(pass_challenge(mfa, page)))
    assert claims["acr"] == ACR_AAL2


def test_essential_aal2_or_mfa_for_an_account_with_only_email_is_met_at_the_mfa_level(
        mfa, new_user, cohort_rp, browser):
    enroll_by_email(browser(), cohort_rp[0])
    page = mfa.start(cohort_rp[0], claims=essential(ACR_AAL2, ACR_MFA))
    assert heading(page) == CHALLENGE
    page = mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com"))
    claims = token_claims(mfa, cohort_rp, mfa.finish(page))
    assert claims["acr"] == ACR_MFA


# --- discovery ---------------------------------------------------------------------------


def test_discovery_lists_the_three_acr_values_when_the_plugin_is_on(client):
    document = client.get("/.well-known/openid-configuration").get_json()
    assert document["acr_values_supported"] == [ACR_PWD, ACR_MFA, ACR_AAL2]
    assert "acr" in document["claims_supported"] and "amr" in document["claims_supported"]


# --- the admin command -------------------------------------------------------------------


def idp(runner, *args):
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output)


def create_cop(runner, *extra):
    return idp(runner, "clients", "create", "--name", "COP", "--client-id", "cop-admin",
               "--redirect-uri", "https://cop.example/cb", *extra)


def test_clients_create_takes_the_mfa_policy_and_remembered_devices_flags(app, runner):
    created = create_cop(runner, "--mfa-policy", "always", "--no-remembered-devices")
    assert created["mfa_policy"] == "always"
    assert created["remembered_devices"] is False
    shown = idp(runner, "clients", "show", "cop-admin")
    assert shown["mfa_policy"] == "always"
    assert shown["remembered_devices"] is False
    db.session.expire_all()
    stored = db.session.scalar(db.select(Client).filter_by(client_id="cop-admin"))
    assert stored.settings["mfa_policy"] == "always"
    assert stored.settings["remembered_devices"] is False


def test_clients_create_without_the_flags_uses_cohort_and_allows_remembered_devices(
        app, runner):
    created = create_cop(runner)
    assert created["mfa_policy"] == "cohort"
    assert created["remembered_devices"] is True


def test_clients_update_changes_only_the_mfa_settings_given(app, runner):
    create_cop(runner, "--mfa-policy", "always", "--no-remembered-devices")
    updated = idp(runner, "clients", "update", "cop-admin", "--mfa-policy", "cohort")
    assert updated["mfa_policy"] == "cohort"
    assert updated["remembered_devices"] is False
    assert idp(runner, "clients", "show", "cop-admin")["mfa_policy"] == "cohort"
    updated = idp(runner, "clients", "update", "cop-admin", "--remembered-devices")
    assert (updated["mfa_policy"], updated["remembered_devices"]) == ("cohort", True)


@pytest.mark.parametrize("command", ["create", "update"])
def test_an_invalid_mfa_policy_is_refused_with_a_clear_error(app, runner, command):
    create_cop(runner, "--mfa-policy", "always")
    args = (["clients", "create", "--name", "X", "--client-id", "x-app", "--redirect-uri",
             "https://x.example/cb"] if command == "create"
            else ["clients", "update", "cop-admin"])
    result = runner.invoke(args=[*args, "--mfa-policy", "sometimes"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--mfa-policy" in result.output
    assert "'sometimes' is not one of 'always', 'cohort'" in result.output
    assert idp(runner, "clients", "show", "cop-admin")["mfa_policy"] == "always"
    db.session.expire_all()
    assert db.session.scalar(db.select(Client).filter_by(client_id="x-app")) is None


def test_a_client_created_with_mfa_policy_always_makes_an_older_account_enroll(
        app, runner, mfa, old_user):
    create_cop(runner, "--mfa-policy", "always", "--no-remembered-devices")
    rp = db.session.scalar(db.select(Client).filter_by(client_id="cop-admin"))
    page = mfa.start(rp, username="olga")
    assert heading(page) == "Multifactor Authentication (MFA)"
    html = page.get_data(as_text=True)
    assert "Enroll in MFA" in html and "Not Now" not in html


def test_a_client_updated_to_refuse_remembered_devices_asks_for_the_passcode_again(
        app, runner, mfa, enrolled, cohort_rp):
    rp = cohort_rp[0]
    mfa.finish(pass_challenge(mfa, mfa.start(rp), remember=True))
    age_session_events(enrolled.user.id, 60)
    idp(runner, "clients", "update", rp.client_id, "--no-remembered-devices")
    db.session.expire_all()
    page = mfa.start(rp, prompt="login")
    assert heading(page) == CHALLENGE


def test_the_demo_seed_gives_the_customer_onboarding_portal_mfa_policy_always(app, runner):
    result = runner.invoke(args=["demo", "seed"])
    assert result.exit_code == 0, result.output
    cop = idp(runner, "clients", "show", "customer-onboarding-portal")
    assert cop["name"] == "Customer Onboarding Portal"
    assert cop["mfa_policy"] == "always"
    assert cop["remembered_devices"] is True
    assert idp(runner, "clients", "show", "click-n-ship")["mfa_policy"] == "cohort"


# --- the plugin switched off -------------------------------------------------------------


@pytest.fixture
def plugin_off(app, tmp_path):
    """The same database and keys, served by an IdP without the MFA plugin."""
    db.session.commit()
    return create_app(base_config(tmp_path, IDP_PLUGINS=""))


def signed_in_without_plugin(plugin_off, rp_and_secret, username="alice") -> dict:
    rp, secret = rp_and_secret
    browser = OidcActions(plugin_off.test_client())
    params = browser.sign_in(rp, username)
    assert "code" in params, params
    response = browser.token(rp, secret, params["code"])
    assert response.status_code == 200, response.get_json()
    keyset = KeySet.import_key_set(browser.http.get("/jwks.json").get_json())
    return jwt.decode(response.get_json()["id_token"], keyset).claims


def test_without_the_plugin_an_enrolled_account_signs_in_with_the_password_only(
        enrolled, cohort_rp, strict_rp, plugin_off):
    for rp_and_secret in (cohort_rp, strict_rp):
        claims = signed_in_without_plugin(plugin_off, rp_and_secret)
        assert claims["acr"] == ACR_PWD
        assert claims["amr"] == ["pwd"]


def test_without_the_plugin_a_new_account_is_not_asked_to_enroll(
        new_user, cohort_rp, plugin_off):
    claims = signed_in_without_plugin(plugin_off, cohort_rp)
    assert (claims["acr"], claims["amr"]) == (ACR_PWD, ["pwd"])


def test_without_the_plugin_there_are_no_mfa_pages(enrolled, plugin_off):
    http = plugin_off.test_client()
    assert http.get("/mfa/faq").status_code == 404
    assert http.get("/mfa/challenge/anything").status_code == 404
    assert http.get("/mfa/devices").status_code == 404


def test_without_the_plugin_discovery_lists_only_the_password_acr(plugin_off):
    document = plugin_off.test_client().get("/.well-known/openid-configuration").get_json()
    assert document["acr_values_supported"] == [ACR_PWD]


def test_without_the_plugin_an_mfa_acr_request_is_not_met(
        enrolled, cohort_rp, plugin_off):
    rp = cohort_rp[0]
    browser = OidcActions(plugin_off.test_client())
    answer = browser.callback_params(browser.authorize(rp, claims=essential(ACR_MFA)))
    assert answer["error"] == "unmet_authentication_requirements"


def test_without_the_plugin_the_admin_command_has_no_mfa_flags(plugin_off):
    result = plugin_off.test_cli_runner().invoke(args=[
        "clients", "create", "--name", "X", "--redirect-uri", "https://x.example/cb",
        "--mfa-policy", "always"])
    assert result.exit_code == 2
    assert "No such option '--mfa-policy'" in result.output


def test_an_account_created_with_the_plugin_keeps_its_mfa_when_the_plugin_returns(
        app, enrolled, cohort_rp, plugin_off, mfa):
    signed_in_without_plugin(plugin_off, cohort_rp)
    assert heading(mfa.start(cohort_rp[0])) == CHALLENGE
    assert mfa.sms_passcode(to=PHONE_E164)
