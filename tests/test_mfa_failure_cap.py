"""MFA failures in a row are capped over the long run too (NIST SP 800-63B: at most 100
consecutive failed attempts): the cool-down after ``IDP_MFA_MAX_FAILURES`` does not reset the
count of a kind of factor, and ``IDP_MFA_MAX_TOTAL_FAILURES`` in a row block that kind until
the user passes another factor, or the help desk resets the user's MFA. Recovery codes are
capped as well, and only the help desk unblocks them. Every lockout is audited and told to
the user by email. The lock check and the count are one step: parallel wrong guesses, on one
instance or two, are checked no more often than the limits allow.

The limits are small here (3 for the cool-down, 6 in a row) and the clock of a cool-down is
moved instead of waited for."""

from __future__ import annotations

import json
import re

import pytest

from idp import create_app
from idp.extensions import db
from plugins.mfa import lockout
from plugins.mfa.models import FactorFailures, MfaAccount, MfaFactor, Passcode
from tests.conftest import base_config
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import (
    CHALLENGE,
    PHONE_E164,
    audit_events,
    copy_browser,
    end_cool_down,
    run_in_threads,
    wrong,
)
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import ACR_MFA, alert_text, heading

MAX_FAILURES = 3
MAX_TOTAL_FAILURES = 6
SUPPORT = "help@rp.example"  # the help contact of the tests' clients
WRONG_RECOVERY_CODE = "AAAA-BBBB-CCCC-DDDD"


@pytest.fixture
def app_config(mfa_settings):
    return {**mfa_settings, "IDP_MFA_MAX_FAILURES": MAX_FAILURES,
            "IDP_MFA_MAX_TOTAL_FAILURES": MAX_TOTAL_FAILURES}


def text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def sms_count(browser) -> int:
    return len([m for m in browser.sms_messages() if m["to"] == PHONE_E164])


def lockout_reasons(user_id: int) -> list[str]:
    return [event.detail["reason"] for event in audit_events("mfa_locked", user_id)]


def fail(browser, page, answer: str, times: int):
    for _ in range(times):
        page = browser.submit_passcode(page, answer)
        assert heading(page) == CHALLENGE, heading(page)
    return page


def block_sms(browser, rp, user_id: int):
    """Six wrong SMS passcodes in a row, over two cool-downs, a Resend between them; returns
    the last page and the live code it asked for."""
    page = browser.start(rp)
    assert heading(page) == CHALLENGE
    code = browser.sms_passcode()
    page = fail(browser, page, wrong(code), MAX_FAILURES)
    assert "try again in 15 minutes" in alert_text(page)
    end_cool_down(user_id)
    page = browser.resend(page)  # a Resend resets no count
    code = browser.sms_passcode()
    page = fail(browser, page, wrong(code), MAX_TOTAL_FAILURES - MAX_FAILURES - 1)
    assert "not correct" in alert_text(page)
    page = browser.submit_passcode(page, wrong(code))  # the sixth in a row
    end_cool_down(user_id)
    return page, code


def block_recovery_codes(browser, page, user_id: int):
    """Six wrong recovery codes in a row, over two cool-downs; returns the last page."""
    page = browser.use_method(page, "Use a recovery code")
    page = fail(browser, page, WRONG_RECOVERY_CODE, MAX_FAILURES)
    assert "try again in 15 minutes" in alert_text(page)
    end_cool_down(user_id)
    page = fail(browser, page, WRONG_RECOVERY_CODE, MAX_TOTAL_FAILURES - MAX_FAILURES)
    end_cool_down(user_id)
    return page


def add_email_factor(user_id: int) -> None:
    db.session.add(MfaFactor(user_id=user_id, kind="email", destination="alice@example.com"))
    db.session.commit()


def status(runner) -> dict:
    result = runner.invoke(args=["mfa", "status", "alice"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --- the long-term cap ----------------------------------------------------------------------


def test_failures_in_a_row_across_cool_downs_block_the_factor_even_for_the_right_code(
        mfa, browser, enrolled, cohort_rp):
    page, code = block_sms(mfa, cohort_rp[0], enrolled.user.id)

    message = alert_text(page)
    assert "Too many failed attempts with text-message (SMS) passcodes" in message
    assert "sign in with another method" in message and SUPPORT in message
    assert lockout_reasons(enrolled.user.id) == ["cool_down", "cool_down", "blocked"]
    assert audit_events("mfa_locked", enrolled.user.id)[-1].detail["factor"] == "sms"

    # The cool-down is over, the code is live and right: the blocked factor still refuses it.
    refused = mfa.submit_passcode(page, code)
    assert heading(refused) == CHALLENGE
    assert "this method is blocked" in alert_text(refused)
    assert not audit_events("mfa_challenge_passed", enrolled.user.id)
    db.session.expire_all()
    assert db.session.scalar(db.select(Passcode.used_at).filter_by(
        user_id=enrolled.user.id, revoked_at=None).order_by(Passcode.id.desc())) is None

    # A new sign-in is not offered the factor any more, nor sent a code for it.
    sent = sms_count(mfa)
    other = browser()
    page = other.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert "Enter one of the recovery codes" in text(page)
    assert "sms" not in other.method_buttons(page).values()
    asked = other.ask_for_method(page, "sms")
    assert "Enter one of the recovery codes" in text(asked)
    assert sms_count(mfa) == sent


def test_failures_of_one_kind_short_of_the_cap_leave_it_usable(mfa, enrolled, cohort_rp):
    page = mfa.start(cohort_rp[0])
    page = fail(mfa, page, wrong(mfa.sms_passcode()), MAX_FAILURES)
    end_cool_down(enrolled.user.id)
    page = mfa.resend(page)
    code = mfa.sms_passcode()
    page = fail(mfa, page, wrong(code), MAX_TOTAL_FAILURES - MAX_FAILURES - 1)  # five in a row

    params = mfa.finish(mfa.submit_passcode(page, code))
    assert "code" in params
    assert lockout.blocked_kinds(enrolled.user.id) == set()
    db.session.expire_all()
    assert db.session.scalars(db.select(FactorFailures)).all() == []  # the success cleared it


def test_another_factor_passes_while_one_is_blocked_and_unblocks_it(
        mfa, browser, enrolled, cohort_rp):
    add_email_factor(enrolled.user.id)
    block_sms(mfa, cohort_rp[0], enrolled.user.id)

    other = browser()
    page = other.start(cohort_rp[0])
    assert "Please enter the passcode sent to the email address" in text(page)
    assert "sms" not in other.method_buttons(page).values()
    claims = other.id_token_claims(*cohort_rp, other.finish(other.submit_passcode(
        page, other.email_passcode(to="alice@example.com"))))
    assert set(claims["amr"]) == {"pwd", "email", "otp", "mfa"}

    assert lockout.blocked_kinds(enrolled.user.id) == set()
    assert audit_events("mfa_unblocked", enrolled.user.id)[-1].detail["factors"] == ["sms"]
    third = browser()
    page = third.start(cohort_rp[0])
    assert "Please enter the passcode sent to the phone number" in text(page)
    claims = third.id_token_claims(*cohort_rp, third.finish(third.submit_passcode(
        page, third.sms_passcode())))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}


def test_a_recovery_code_passes_while_sms_is_blocked_and_unblocks_it(
        mfa, browser, enrolled, cohort_rp):
    block_sms(mfa, cohort_rp[0], enrolled.user.id)

    other = browser()
    page = other.start(cohort_rp[0])
    assert "Enter one of the recovery codes" in text(page)
    claims = other.id_token_claims(*cohort_rp, other.finish(other.submit_passcode(
        page, enrolled.recovery_codes[0])))
    assert "rcode" in claims["amr"] and claims["acr"] == ACR_MFA

    assert lockout.blocked_kinds(enrolled.user.id) == set()
    third = browser()
    page = third.start(cohort_rp[0])
    assert "Please enter the passcode sent to the phone number" in text(page)


# --- recovery codes -------------------------------------------------------------------------


def test_recovery_codes_are_capped_too_and_only_the_help_desk_unblocks_them(
        runner, mfa, browser, enrolled, cohort_rp):
    page = block_recovery_codes(mfa, mfa.start(cohort_rp[0]), enrolled.user.id)
    message = alert_text(page)
    assert "Too many failed attempts with recovery codes" in message
    assert f"only {SUPPORT} can unblock them" in message
    assert lockout_reasons(enrolled.user.id)[-1] == "blocked"

    # A right recovery code is refused; the phone still works ...
    refused = mfa.submit_passcode(page, enrolled.recovery_codes[0])
    assert "Too many failed attempts with recovery codes" in alert_text(refused)
    assert not audit_events("mfa_challenge_passed", enrolled.user.id)
    page = mfa.use_method(refused, "SMS")
    claims = mfa.id_token_claims(*cohort_rp, mfa.finish(mfa.submit_passcode(
        page, mfa.sms_passcode())))
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}

    # ... but passing it does not unblock the recovery codes.
    assert lockout.blocked_kinds(enrolled.user.id) == {"recovery"}
    page = browser().start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert "Use a recovery code" not in text(page)
    assert [b["kind"] for b in status(runner)["blocked"]] == ["recovery"]

    assert runner.invoke(args=["mfa", "reset", "alice", "--yes"]).exit_code == 0
    assert lockout.blocked_kinds(enrolled.user.id) == set()


def test_when_every_factor_is_blocked_the_challenge_says_to_contact_the_help_desk(
        mfa, browser, enrolled, cohort_rp):
    page, _ = block_sms(mfa, cohort_rp[0], enrolled.user.id)
    block_recovery_codes(mfa, page, enrolled.user.id)
    assert lockout.blocked_kinds(enrolled.user.id) == {"sms", "recovery"}

    sent = sms_count(mfa)
    other = browser()
    page = other.start(cohort_rp[0])
    assert page.status_code == 200 and heading(page) == CHALLENGE
    message = alert_text(page)
    assert "every multifactor authentication (MFA) method of your account is blocked" in message
    assert f"Contact {SUPPORT}" in message
    assert other.method_buttons(page) == {}
    refused = other.submit_passcode(page, wrong(mfa.sms_passcode()))
    assert refused.status_code == 200 and heading(refused) == CHALLENGE
    assert f"Contact {SUPPORT}" in alert_text(refused)
    assert sms_count(mfa) == sent
    assert not audit_events("mfa_challenge_passed", enrolled.user.id)


# --- the help desk ----------------------------------------------------------------------------


def test_mfa_status_shows_the_block_and_mfa_reset_clears_it(runner, mfa, enrolled, cohort_rp):
    block_sms(mfa, cohort_rp[0], enrolled.user.id)

    shown = status(runner)
    assert [b["kind"] for b in shown["blocked"]] == ["sms"]
    assert shown["failures_in_a_row"] == {"sms": MAX_TOTAL_FAILURES}

    result = runner.invoke(args=["mfa", "reset", "alice", "--yes"])
    assert result.exit_code == 0, result.output
    shown = status(runner)
    assert shown["blocked"] == [] and shown["failures_in_a_row"] == {}
    assert shown["locked_until"] is None
    assert lockout.blocked_kinds(enrolled.user.id) == set()
    db.session.expire_all()
    assert db.session.get(MfaAccount, enrolled.user.id).failures == 0


# --- notices ----------------------------------------------------------------------------------


def test_each_lockout_sends_a_notice_to_the_mfa_email_saying_what_to_do(
        mfa, enrolled, cohort_rp):
    account = db.session.get(MfaAccount, enrolled.user.id)
    account.mfa_email = "alice.mfa@example.com"  # verified: the notices go there
    db.session.commit()
    before = len(mfa.mail.messages)

    page = mfa.start(cohort_rp[0])
    first = mfa.sms_passcode()
    page = fail(mfa, page, wrong(first), MAX_FAILURES)
    notices = mfa.mail.messages[before:]
    assert [n.message["Subject"] for n in notices] == ["Too many failed attempts to sign in"]
    assert notices[0].rcpt_tos == ["alice.mfa@example.com"]
    assert "3 failed attempts in a row" in notices[0].text
    assert "try again in 15 minutes" in notices[0].text
    assert SUPPORT in notices[0].text

    end_cool_down(enrolled.user.id)
    page = mfa.resend(page)
    second = mfa.sms_passcode()
    fail(mfa, page, wrong(second), MAX_TOTAL_FAILURES - MAX_FAILURES)
    notices = mfa.mail.messages[before:]
    assert [n.message["Subject"] for n in notices] == [
        "Too many failed attempts to sign in", "A multifactor authentication method was blocked"]
    blocked = notices[1]
    assert blocked.rcpt_tos == ["alice.mfa@example.com"]
    assert "text-message (SMS) passcodes can no longer be used" in blocked.text
    assert "Sign in with another method in 15 minutes to unblock this one" in blocked.text
    assert SUPPORT in blocked.text
    for notice in notices:
        body = notice.text + notice.html
        assert not re.search(r"\b\d{6}\b", body)  # no code in a notice
        assert first not in body and second not in body


# --- one step: the lock check and the count ---------------------------------------------------


PARALLEL = 12


@pytest.fixture(params=["cool_down", "blocked"])
def limit(request):
    """The limit parallel guesses run into: the cool-down after 3, or the cap of 6 in a row."""
    return request.param


class TestParallelWrongGuesses:
    @pytest.fixture
    def app_config(self, mfa_settings, limit):
        max_failures, max_total = (3, 100) if limit == "cool_down" else (50, 6)
        # Each code takes more wrong tries than the guesses admitted: only the lockout stops.
        return {**mfa_settings, "IDP_MFA_MAX_FAILURES": max_failures,
                "IDP_MFA_MAX_TOTAL_FAILURES": max_total, "IDP_PASSCODE_MAX_ATTEMPTS": 10}

    def test_parallel_wrong_guesses_on_two_instances_are_checked_no_more_than_the_limit(
            self, app, tmp_path, app_config, mfa, enrolled, cohort_rp, limit):
        admitted = 3 if limit == "cool_down" else 6
        other = create_app(base_config(tmp_path, **app_config))  # the same database
        page = mfa.start(cohort_rp[0])
        guess = wrong(mfa.sms_passcode())
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                         page.get_data(as_text=True)).group(1)
        tabs = [copy_browser((app, other)[i % 2], mfa) for i in range(PARALLEL)]

        def submit(i):
            return tabs[i].http.post(page.request.path, data={
                "csrf_token": csrf, "passcode": guess, "submit": "Submit"})

        responses = run_in_threads(PARALLEL, submit)

        assert [r.status_code for r in responses] == [200] * PARALLEL
        alerts = [alert_text(r) for r in responses]
        assert len([a for a in alerts if "not correct" in a]) == admitted - 1, alerts
        assert len([a for a in alerts if "Too many failed attempts" in a]) == (
            PARALLEL - admitted + 1), alerts
        db.session.expire_all()
        code = db.session.scalars(db.select(Passcode).filter_by(
            user_id=enrolled.user.id, revoked_at=None).order_by(Passcode.id.desc())).first()
        assert code.attempts == admitted  # the guesses checked
        assert lockout_reasons(enrolled.user.id) == [limit]
        row = db.session.get(FactorFailures, (enrolled.user.id, "sms"))
        assert row.failures == admitted
        assert (row.blocked_at is not None) == (limit == "blocked")
        with other.app_context():
            db.engine.dispose()


def test_parallel_admissions_on_two_instances_never_pass_the_limit(app, tmp_path, app_config,
                                                                    enrolled):
    from tests.concurrency import in_app_contexts

    instances = [app, create_app(base_config(tmp_path, **app_config))]
    user_id = enrolled.user.id

    def guess(_):
        attempt = lockout.admit_attempt(user_id, "totp")
        if attempt.admitted:
            lockout.record_failure(attempt)
        db.session.commit()
        return attempt.admitted

    first = run_in_threads(PARALLEL, in_app_contexts(instances, guess))
    assert first.count(True) == MAX_FAILURES  # then the cool-down
    end_cool_down(user_id)
    second = run_in_threads(PARALLEL, in_app_contexts(instances, guess))
    assert second.count(True) == MAX_TOTAL_FAILURES - MAX_FAILURES  # then the block
    end_cool_down(user_id)
    assert lockout.admit_attempt(user_id, "totp").refusal == "blocked"
    db.session.rollback()
    assert lockout.admit_attempt(user_id, "sms").admitted  # another kind is not blocked
    db.session.rollback()
    assert lockout_reasons(user_id) == ["cool_down", "cool_down", "blocked"]
    with instances[1].app_context():
        db.engine.dispose()
