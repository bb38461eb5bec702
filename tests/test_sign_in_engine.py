"""The sign-in engine (idp/signin): each step's page acts only while its step is the sign-in's
current one, and otherwise sends the browser back to the pipeline; the challenge sends its
passcode when the sign-in arrives at it or another method is asked for (its link, which
then redirects to the page), never when its page is shown; the MFA progress is one typed
object; pages ask factors, not kinds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from idp.extensions import db
from plugins.mfa.models import MfaFactor
from plugins.mfa.progress import MfaProgress, progress
from tests.conftest import forms
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import CHALLENGE, PHONE_E164
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import heading
from tests.test_hot_paths import statements

ROOT = Path(__file__).resolve().parent.parent
FACTOR_KINDS = {"sms", "email", "totp", "recovery"}


def sms_count(browser) -> int:
    return len([m for m in browser.sms_messages() if m["to"] == PHONE_E164])


def pending_of(page) -> str:
    return re.search(r"/mfa/challenge/([A-Za-z0-9_-]+)", page.request.path).group(1)


# Every page of a step, by the path that opens it (consent and terms are the core's).
STEP_PAGES = ["/mfa/offer/{}", "/mfa/verify-email/{}", "/mfa/enroll/{}", "/mfa/phone/{}",
              "/mfa/passcode/{}", "/mfa/app/{}", "/mfa/modify/{}", "/mfa/modify-email/{}",
              "/consent/{}", "/terms/{}"]


@pytest.mark.parametrize("path", STEP_PAGES)
def test_a_step_page_opened_while_another_step_is_current_sends_the_browser_back(
        mfa, enrolled, cohort_rp, path):
    page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE  # the current step: only the password was checked
    pending = pending_of(page)
    token = next(v for k, v in forms(page.get_data(as_text=True))[0]["fields"].items()
                 if "csrf_token" in k)
    for method, data in (("get", None), ("post", {"csrf_token": token})):
        answer = getattr(mfa.http, method)(path.format(pending), data=data)
        assert answer.status_code == 302, (method, answer.status_code)
        assert answer.headers["Location"].endswith(f"/authorize/resume/{pending}")
        assert heading(mfa.go(answer)) == CHALLENGE


def test_the_challenge_opened_before_the_password_leads_to_the_password(
        mfa, enrolled, cohort_rp):
    sent = sms_count(mfa)
    response = mfa.authorize(cohort_rp[0])
    pending = response.headers["Location"].rsplit("/", 1)[1]
    answer = mfa.http.get(f"/mfa/challenge/{pending}")
    assert answer.headers["Location"].endswith(f"/authorize/resume/{pending}")
    assert "Log In" in mfa.go(answer).get_data(as_text=True)
    assert sms_count(mfa) == sent


def test_the_passcode_is_sent_by_the_answer_to_the_password_not_by_the_challenge_page(
        mfa, enrolled, cohort_rp):
    before = sms_count(mfa)
    answer = mfa.login(mfa.authorize(cohort_rp[0]))
    assert answer.status_code == 302 and "/mfa/challenge/" in answer.headers["Location"]
    assert sms_count(mfa) == before + 1  # sent before the page is shown
    page = mfa.go(answer)
    assert "We sent a passcode to the phone number" in page.get_data(as_text=True)
    for _ in range(3):  # showing the page again (a reload, a prefetch) sends nothing
        page = mfa.http.get(page.request.path)
        assert heading(page) == CHALLENGE
    assert sms_count(mfa) == before + 1
    assert mfa.finish(mfa.submit_passcode(page, mfa.sms_passcode()))


def add_email_factor(user_id: int) -> None:
    db.session.add(MfaFactor(user_id=user_id, kind="email", destination="alice@example.com"))
    db.session.commit()


def test_another_method_is_sent_by_its_button_which_then_shows_the_page_that_sends_nothing(
        mfa, enrolled, cohort_rp):
    add_email_factor(enrolled.user.id)
    page = mfa.start(cohort_rp[0])

    def emailed() -> int:
        return len([m for m in mfa.mail.messages if "passcode:" in m.text])

    before = emailed()
    # Opened by address, the former link to the method sends nothing.
    mfa.go(mfa.http.get(page.request.path + "?factor=email"))
    assert emailed() == before
    method_form = next(f for f in forms(page.get_data(as_text=True))
                       if (f["action"] or "").endswith("/method"))
    answer = mfa.http.post(method_form["action"], data={**method_form["fields"],
                                                        "m-factor": "email"})
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith(page.request.path)  # a page to reload
    assert emailed() == before + 1
    page = mfa.go(answer)
    assert "the email address" in page.get_data(as_text=True)
    for _ in range(3):
        assert "the email address" in mfa.http.get(page.request.path).get_data(as_text=True)
    assert emailed() == before + 1
    assert mfa.finish(mfa.submit_passcode(page, mfa.email_passcode(to="alice@example.com")))


# --- the MFA progress -----------------------------------------------------------------------


class _Context:
    def __init__(self, state=None):
        self.state, self.extras = dict(state or {}), {}

    def step_state(self, name):
        return dict(self.state.get(name, {}))

    def save_state(self, name, value):
        self.state[name] = value


def test_the_mfa_progress_is_typed_and_saves_only_what_differs_from_its_defaults():
    ctx = _Context({"mfa": {"enrolling": True, "not_a_field": 1}})
    current = progress(ctx)
    assert isinstance(current, MfaProgress) and current.enrolling and not current.not_now
    assert progress(ctx) is current  # read once per context
    current.update(code_factor="sms", code_purpose="challenge")
    assert ctx.state["mfa"] == {"enrolling": True, "code_factor": "sms",
                                "code_purpose": "challenge"}
    with pytest.raises(AttributeError):
        current.update(enroling=True)  # a typo is an error, not a new flag


# --- pages ask factors ----------------------------------------------------------------------


def _kind_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for value in ast.walk(node):
                if isinstance(value, ast.Constant) and value.value in FACTOR_KINDS:
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_page_or_template_of_the_mfa_plugin_branches_on_a_factor_kind():
    pages = sorted((ROOT / "plugins/mfa/pages").glob("*.py"))
    assert pages
    assert [hit for path in pages for hit in _kind_comparisons(path)] == []
    templates = sorted((ROOT / "plugins/mfa/templates/mfa").glob("*.html"))
    branching = re.compile(r"\{%-?\s*(el)?if[^%]*\bkind\b\s*(==|in|!=)")
    assert [t.name for t in templates if branching.search(t.read_text())] == []


def test_another_method_asked_for_without_the_forms_token_sends_nothing(
        mfa, enrolled, cohort_rp):
    add_email_factor(enrolled.user.id)
    page = mfa.start(cohort_rp[0])
    before = len(mfa.mail.messages)
    answer = mfa.http.post(page.request.path + "/method", data={"m-factor": "email"})
    assert answer.status_code == 400
    assert "the phone number" in mfa.http.get(page.request.path).get_data(as_text=True)
    assert len(mfa.mail.messages) == before


def test_each_request_of_a_challenged_sign_in_reads_the_users_factors_once(
        mfa, enrolled, cohort_rp):
    # The steps and the challenge ask about the factors several times in one run of the
    # pipeline: the password's answer and the challenge page read them once each.
    with statements() as seen:
        page = mfa.start(cohort_rp[0])
    assert heading(page) == CHALLENGE
    assert len([s for s in seen if re.search(r"\bFROM mfa_factors\b", s)]) == 2
