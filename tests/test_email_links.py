"""Email verification links: sending one revokes the account's earlier links; a link
works only for a live sign-in of the user who sent it; an enrolled email factor never moves
to another address by a link alone."""

from __future__ import annotations

from idp.extensions import db
from idp.models import PendingAuthorization
from idp.timeutil import utcnow
from plugins.mfa.models import MfaAccount, MfaFactor
from tests.conftest import PASSWORD, forms, make_user
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import age_send_counters, enroll_by_email
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import AFTER_CUTOFF, heading

EXPIRED = "Link expired"


def pending_id(page) -> str:
    return page.request.path.rstrip("/").rsplit("/", 1)[-1]


def mfa_email(user_id: int) -> tuple[str | None, bool]:
    db.session.expire_all()
    account = db.session.get(MfaAccount, user_id)
    if account is None:
        return None, False
    return account.mfa_email, account.mfa_email_verified_at is not None


def email_factor(user_id: int) -> str | None:
    db.session.expire_all()
    row = db.session.scalar(db.select(MfaFactor).filter_by(user_id=user_id, kind="email"))
    return row.destination if row else None


def link_to_other_address(browser, rp, address="elsewhere@example.org"):
    """Enroll in MFA, No, another address, Send Email Link: the waiting page."""
    page = browser.verify_email_change(browser.enroll_in_mfa(browser.start(rp)), address)
    assert heading(page) == "Verify Your Email"
    return page, browser.email_link(to=address)


def test_a_link_sent_later_from_another_sign_in_revokes_the_earlier_one(
        mfa, browser, new_user, cohort_rp):
    rp = cohort_rp[0]
    _, stale = link_to_other_address(mfa, rp)
    age_send_counters(3600)
    enroll_by_email(browser(), rp)  # the account email, verified and enrolled elsewhere
    assert email_factor(new_user.id) == "alice@example.com"

    answer = browser().http.get(stale)  # any browser
    assert answer.status_code == 400 and heading(answer) == EXPIRED
    assert answer.headers["Cache-Control"] == "no-store"
    assert email_factor(new_user.id) == "alice@example.com"
    assert mfa_email(new_user.id) == ("alice@example.com", True)


def test_a_link_of_a_finished_sign_in_verifies_nothing(mfa, new_user, cohort_rp):
    _, link = link_to_other_address(mfa, cohort_rp[0])
    db.session.execute(db.update(PendingAuthorization).values(completed_at=utcnow()))
    db.session.commit()

    answer = mfa.http.get(link)
    assert answer.status_code == 400 and heading(answer) == EXPIRED
    assert mfa_email(new_user.id) == (None, False)


def test_a_link_of_an_expired_sign_in_verifies_nothing(mfa, new_user, cohort_rp):
    _, link = link_to_other_address(mfa, cohort_rp[0])
    db.session.execute(db.update(PendingAuthorization).values(expires_at=utcnow()))
    db.session.commit()

    assert mfa.http.get(link).status_code == 400
    assert mfa_email(new_user.id) == (None, False)


def test_a_link_of_a_sign_in_taken_over_by_another_user_verifies_nothing(
        mfa, new_user, cohort_rp):
    make_user("bob", created_at=AFTER_CUTOFF)
    page, link = link_to_other_address(mfa, cohort_rp[0])
    pid = pending_id(page)
    login = mfa.http.get(f"/signin/{pid}")
    fields = forms(login.get_data(as_text=True))[0]["fields"]
    fields.update(username="bob", password=PASSWORD, submit="1")
    mfa.http.post(f"/signin/{pid}", data=fields)

    answer = mfa.http.get(link)
    assert answer.status_code == 400 and heading(answer) == EXPIRED
    assert mfa_email(new_user.id) == (None, False)


def test_the_link_of_the_sign_in_in_progress_still_verifies(mfa, new_user, cohort_rp):
    page, link = link_to_other_address(mfa, cohort_rp[0])
    assert heading(mfa.http.get(link)) == "Thank you for verifying your email"
    assert mfa_email(new_user.id) == ("elsewhere@example.org", True)
    assert mfa.continue_after_link(page).status_code == 200


def test_a_link_of_a_sign_in_whose_user_signed_out_verifies_nothing(mfa, new_user, cohort_rp):
    from tests.mfa_journeys import sign_out

    _, link = link_to_other_address(mfa, cohort_rp[0])
    sign_out(mfa)

    answer = mfa.http.get(link)
    assert answer.status_code == 400 and heading(answer) == EXPIRED
    assert mfa_email(new_user.id) == (None, False)
