"""Send throttles of the delivery service (DESIGN §6): the interval per destination, the
passcodes per account, the SMS per phone number and the global SMS breaker; refusals are
audited without the destination and record nothing; limits are configuration, shared by
every instance on one database and exact under concurrency. Every test runs with the limits
in the database and in Redis."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading

import pytest

from idp import create_app
from idp.delivery import DeliveryError, ThrottledError, send_email, send_sms
from idp.extensions import db
from idp.models import AuditEvent, OutboxMessage
from idp.security import digest
from tests.conftest import assert_setting_refused, base_config, make_user
from tests.ratelimit_support import age_counted_events, counted_events

PHONE = "(202) 555-0143"
PHONE_E164 = "+12025550143"


# --- helpers -----------------------------------------------------------------------------


def passcode_email(to, user_id=None):
    send_email(to, "passcode", {"code": "123456"}, kind="passcode", user_id=user_id)


def passcode_sms(to, user_id=None):
    send_sms(to, "passcode", {"code": "123456"}, kind="passcode", user_id=user_id)


def link_email(to, user_id=None):
    # A verification link's throttles (the template is the core's own: links are counted by
    # their kind, whatever they say).
    send_email(to, "test_message", {}, kind="link",
               user_id=user_id)


def notice_email(to, user_id=None):
    send_email(to, "password_changed", kind="notice", user_id=user_id)


def notice_sms(to, user_id=None):
    send_sms(to, "notice", {"text": "Your password was changed."}, kind="notice",
             user_id=user_id)


def refused(send, *args, **kwargs) -> ThrottledError:
    before = outbox_count()
    with pytest.raises(ThrottledError) as info:
        send(*args, **kwargs)
    assert outbox_count() == before, "a refused message was delivered"
    return info.value


def outbox_count(to=None) -> int:
    query = db.select(db.func.count(OutboxMessage.id))
    if to is not None:
        query = query.where(OutboxMessage.recipient == to)
    return db.session.scalar(query)


def counters() -> dict[str, list[float]]:
    return counted_events()


def age_counters(seconds: float) -> None:
    """Move every counted send ``seconds`` into the past, as if that much time had passed."""
    age_counted_events(seconds)


def throttle_events() -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(
        db.select(AuditEvent).filter_by(event="delivery_throttled").order_by(AuditEvent.id)
    ))


def phones(count, area="202"):
    return [f"({area}) 555-{100 + n:04d}" for n in range(count)]


@pytest.fixture
def limit_settings():
    return {}


@pytest.fixture
def app_config(rate_limit_backend, limit_settings):
    return {**rate_limit_backend, **limit_settings}


@pytest.fixture
def user(app):
    return make_user("bob")


# --- the interval per destination ----------------------------------------------------------


def test_second_passcode_to_one_email_within_30_seconds_is_refused_saying_wait_and_code_valid(
    app, user
):
    passcode_email("bob@example.com", user.id)

    error = refused(passcode_email, "bob@example.com", user.id)

    assert 28 <= error.retry_after <= 30
    assert f"Wait {error.retry_after} seconds" in error.user_message
    assert "still valid" in error.user_message
    assert "b**@example.com" in error.user_message
    assert outbox_count("bob@example.com") == 1


def test_second_sms_passcode_to_one_number_in_another_spelling_is_refused(app, user):
    passcode_sms(PHONE, user.id)

    error = refused(passcode_sms, "+1 202-555-0143", user.id)

    assert re.search(r"Wait \d+ seconds", error.user_message)
    assert "still valid" in error.user_message
    assert "***-***-0143" in error.user_message


def test_interval_ignores_the_case_of_an_email_address(app, user):
    passcode_email("bob@example.com", user.id)
    refused(passcode_email, "Bob@Example.COM", user.id)


def test_the_interval_does_not_affect_another_destination(app, user):
    passcode_email("bob@example.com", user.id)
    passcode_sms(PHONE, user.id)

    passcode_email("bob.other@example.com", user.id)
    passcode_sms("(202) 555-0144", user.id)

    assert outbox_count() == 4


def test_the_interval_does_not_depend_on_the_account(app, user):
    carol = make_user("carol")
    passcode_sms(PHONE, user.id)
    refused(passcode_sms, PHONE, carol.id)


def test_after_the_interval_passes_a_new_passcode_is_sent(app, user):
    passcode_email("bob@example.com", user.id)
    age_counters(29)
    error = refused(passcode_email, "bob@example.com", user.id)
    assert error.retry_after <= 2

    age_counters(1.5)
    passcode_email("bob@example.com", user.id)

    assert outbox_count("bob@example.com") == 2


def test_a_send_that_failed_does_not_hold_back_an_immediate_retry(app, user):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    app.config.update(IDP_SMS_BACKEND="webhook", IDP_SMS_WEBHOOK_SECRET="s3cret",
                      IDP_SMS_WEBHOOK_URL=f"http://127.0.0.1:{port}/sms")
    with pytest.raises(DeliveryError) as info:
        passcode_sms(PHONE, user.id)
    assert not isinstance(info.value, ThrottledError)
    # Taken back from the interval and the account; the SMS limits still count it.
    counted = {key.split(":")[0] + ":" + key.split(":")[1]: len(times)
               for key, times in counters().items() if times}
    assert counted == {"sms:phone": 1, "sms:global": 1}

    app.config["IDP_SMS_BACKEND"] = "outbox"
    passcode_sms(PHONE, user.id)

    assert outbox_count(PHONE_E164) == 1


# --- passcodes per account -----------------------------------------------------------------


def test_at_most_5_passcodes_per_account_across_destinations_the_6th_says_minutes(app, user):
    passcode_email("b1@example.com", user.id)
    passcode_email("b2@example.com", user.id)
    passcode_sms(PHONE, user.id)
    passcode_sms("(202) 555-0144", user.id)
    passcode_email("b3@example.com", user.id)

    error = refused(passcode_email, "b4@example.com", user.id)

    assert "Try again in 15 minutes" in error.user_message
    assert "another method" in error.user_message
    assert 890 <= error.retry_after <= 900
    assert outbox_count() == 5
    # Another account is not affected.
    passcode_email("b4@example.com", make_user("carol").id)


def test_account_limit_window_slides_older_sends_stop_counting(app, user):
    for n in range(3):
        passcode_email(f"early{n}@example.com", user.id)
    age_counters(10 * 60)
    for n in range(2):
        passcode_email(f"late{n}@example.com", user.id)
    error = refused(passcode_email, "x@example.com", user.id)
    assert "Try again in 5 minutes" in error.user_message

    age_counters(5 * 60)  # the three early sends are now 15 minutes old

    for n in range(3):
        passcode_email(f"again{n}@example.com", user.id)
    error = refused(passcode_email, "y@example.com", user.id)
    assert "Try again in 10 minutes" in error.user_message


def test_a_refused_send_records_nothing_and_does_not_extend_the_lockout(app, user):
    for n in range(5):
        passcode_email(f"b{n}@example.com", user.id)
    age_counters(14 * 60)
    recorded = counters()

    for n in range(5):
        error = refused(passcode_email, f"more{n}@example.com", user.id)
        assert "Try again in 1 minute," in error.user_message
        refused(passcode_email, "b0@example.com", user.id)

    assert counters() == recorded
    age_counters(60)
    passcode_email("more0@example.com", user.id)


def test_refused_by_one_limit_counts_against_none_of_the_others(app, user):
    passcode_sms(PHONE, user.id)
    recorded = counters()

    refused(passcode_sms, PHONE, user.id)  # the interval refuses

    assert counters() == recorded  # neither the account, the phone nor the global count


# --- links and notices ---------------------------------------------------------------------


def test_links_and_notices_do_not_count_against_the_account_passcode_limit(app, user):
    for n in range(5):
        if n < 4:  # links have a budget of their own (5 per account per hour)
            link_email(f"link{n}@example.com", user.id)
        notice_email(f"notice{n}@example.com", user.id)
        notice_sms(phones(5)[n], user.id)
    for n in range(5):
        passcode_email(f"code{n}@example.com", user.id)
    refused(passcode_email, "code5@example.com", user.id)

    # And with the passcodes used up, links and notices still go out.
    link_email("link5@example.com", user.id)
    notice_email("notice5@example.com", user.id)
    notice_sms("(202) 555-0199", user.id)


def test_an_account_gets_at_most_5_links_an_hour_whatever_the_addresses(app, user):
    for n in range(5):
        link_email(f"addr{n}@example.com", user.id)
    error = refused(link_email, "addr5@example.com", user.id)
    assert error.reason == "throttled:link_account"
    assert "Too many verification links" in error.user_message
    # Another account is not held back by it, nor this account's passcodes.
    link_email("other@example.com", make_user("carol").id)
    passcode_email("code@example.com", user.id)


@pytest.mark.parametrize("limit_settings", [{"IDP_LINK_LIMIT_GLOBAL_PER_HOUR": 3}])
def test_links_of_every_account_together_meet_a_global_budget(app, user, limit_settings):
    for n in range(3):
        link_email(f"user{n}@example.com", make_user(f"user{n}").id)
    error = refused(link_email, "late@example.com", user.id)
    assert error.reason == "throttled:link_global"


def test_links_have_their_own_interval_per_destination(app, user):
    link_email("bob@example.com", user.id)

    error = refused(link_email, "bob@example.com", user.id)
    assert error.user_message.startswith("A link was sent to b**@example.com")
    assert "still valid" in error.user_message
    assert re.search(r"Wait \d+ seconds", error.user_message)

    # A passcode to that address is not held back by the link, nor a link elsewhere.
    passcode_email("bob@example.com", user.id)
    link_email("bob.other@example.com", user.id)
    age_counters(30)
    link_email("bob@example.com", user.id)
    assert outbox_count("bob@example.com") == 3


def test_notices_have_no_interval(app, user):
    notice_email("bob@example.com", user.id)
    notice_email("bob@example.com", user.id)
    notice_sms(PHONE, user.id)
    notice_sms(PHONE, user.id)
    assert outbox_count() == 4


# --- SMS per phone number and the global breaker -------------------------------------------


def test_at_most_10_sms_per_phone_number_per_24_hours(app):
    users = [make_user(f"user{n}") for n in range(4)]
    for n in range(10):
        if n % 3 == 0:
            notice_sms(PHONE, users[n % 4].id)
        else:
            passcode_sms(PHONE, users[n % 4].id)
            age_counters(31)  # past the interval to the number

    error = refused(notice_sms, PHONE, users[0].id)
    assert "Too many text messages" in error.user_message
    assert re.search(r"Try again in 2[34] hours", error.user_message)
    assert "another method" in error.user_message
    assert outbox_count(PHONE_E164) == 10
    # Other numbers and email still work.
    notice_sms("(202) 555-0144", users[0].id)
    passcode_email("user0@example.com", users[0].id)

    age_counters(23 * 3600)
    refused(notice_sms, PHONE, users[0].id)
    age_counters(3600)
    notice_sms(PHONE, users[0].id)


def test_per_phone_limit_spans_accounts_and_message_kinds(app):
    app.config["IDP_SMS_LIMIT_PER_PHONE"] = 3
    passcode_sms(PHONE, make_user("u1").id)
    notice_sms(PHONE, make_user("u2").id)
    notice_sms(PHONE)
    age_counters(30)  # past the interval to the number, well inside 24 hours
    error = refused(passcode_sms, "202.555.0143", make_user("u3").id)
    assert "this number" in error.user_message


@pytest.mark.parametrize("limit_settings", [{"IDP_SMS_LIMIT_GLOBAL_PER_HOUR": 3}])
def test_global_sms_breaker_stops_sms_logs_critical_and_email_keeps_working(app, user,
                                                                          caplog):
    for number in phones(3):
        notice_sms(number)

    with caplog.at_level(logging.WARNING):
        error = refused(passcode_sms, "(415) 555-0100", user.id)

    assert "Use another method, such as email" in error.user_message
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical, "the breaker must log at CRITICAL"
    assert "SMS" in critical[0].getMessage()
    refused(notice_sms, "(312) 555-0199")
    # Email passcodes, links and notices keep working.
    passcode_email("bob@example.com", user.id)
    link_email("bob.link@example.com", user.id)
    notice_email("bob@example.com", user.id)
    # An hour later SMS flows again.
    age_counters(3600)
    passcode_sms("(415) 555-0100", user.id)


# --- audit ---------------------------------------------------------------------------------


def test_every_refusal_is_audited_naming_the_limit_with_the_destination_masked(app, user):
    app.config.update(IDP_SMS_LIMIT_PER_PHONE=2, IDP_SMS_LIMIT_GLOBAL_PER_HOUR=4)
    passcode_sms(PHONE, user.id)
    refused(passcode_sms, PHONE, user.id)  # destination
    for n in range(4):
        passcode_email(f"bob{n}@example.com", user.id)
    refused(passcode_email, "robert@example.com", user.id)  # account
    notice_sms(PHONE)
    refused(notice_sms, PHONE)  # phone
    notice_sms("(202) 555-0144")
    notice_sms("(202) 555-0145")
    refused(notice_sms, "(202) 555-0146")  # global

    audited = throttle_events()

    assert [e.detail["limit"] for e in audited] == ["destination", "account", "phone", "global"]
    assert [e.detail["to"] for e in audited] == [
        "***-***-0143", "r*****@example.com", "***-***-0143", "***-***-0146"]
    assert [e.user_id for e in audited] == [user.id, user.id, None, None]
    assert all(e.detail["retry_after"] >= 1 for e in audited)
    assert [e.detail["channel"] for e in audited] == ["sms", "email", "sms", "sms"]
    everything = json.dumps([[e.detail, e.ip, e.client_id] for e in audited])
    for clear in ("2025550143", "555-0143", "2025550146", "555-0146", "robert@example.com"):
        assert clear not in everything


def test_rate_counter_keys_do_not_reveal_the_destination(app, user):
    passcode_sms(PHONE, user.id)
    passcode_email("bob@example.com", user.id)

    keys = " ".join(counters())

    for clear in (PHONE_E164, "2025550143", "bob@example.com"):
        assert clear not in keys
        assert digest(clear) not in keys  # a plain hash of a phone number is easily reversed


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("limit_settings", [{
    "IDP_PASSCODE_RESEND_SECONDS": 5,
    "IDP_SEND_LIMIT_PER_ACCOUNT": 2,
    "IDP_SEND_LIMIT_WINDOW": 120,
    "IDP_SMS_LIMIT_PER_PHONE": 3,
}])
def test_limits_come_from_configuration(app, user):
    passcode_email("bob@example.com", user.id)
    error = refused(passcode_email, "bob@example.com", user.id)
    assert "less than 5 seconds ago" in error.user_message
    assert error.retry_after <= 5
    age_counters(5)
    passcode_email("bob@example.com", user.id)

    error = refused(passcode_email, "bob.other@example.com", user.id)
    assert "Try again in 2 minutes" in error.user_message
    age_counters(120)
    passcode_email("bob.other@example.com", user.id)

    for _ in range(3):
        notice_sms(PHONE)
    refused(notice_sms, PHONE)


def test_limits_come_from_the_environment(tmp_path, database_url, rate_limit_backend,
                                          monkeypatch):
    monkeypatch.setenv("IDP_SEND_LIMIT_PER_ACCOUNT", "1")
    monkeypatch.setenv("IDP_PASSCODE_RESEND_SECONDS", "300")
    app = create_app(base_config(tmp_path, **rate_limit_backend))
    with app.app_context():
        user = make_user("bob")
        passcode_email("bob@example.com", user.id)
        error = refused(passcode_email, "bob@example.com", make_user("carol").id)
        assert "less than 300 seconds" in error.user_message
        error = refused(passcode_email, "bob.other@example.com", user.id)
        assert "Try again in 15 minutes" in error.user_message
        db.session.remove()


@pytest.mark.parametrize("name,value", [
    ("IDP_SEND_LIMIT_PER_ACCOUNT", "abc"),
    ("IDP_SEND_LIMIT_PER_ACCOUNT", "0"),
    ("IDP_PASSCODE_RESEND_SECONDS", "-1"),
    ("IDP_SEND_LIMIT_WINDOW", "1.5"),
    ("IDP_SMS_LIMIT_PER_PHONE", "ten"),
    ("IDP_SMS_LIMIT_GLOBAL_PER_HOUR", "0"),
])
def test_a_bad_limit_stops_the_start_naming_the_variable(tmp_path, monkeypatch, name, value):
    assert_setting_refused(tmp_path, monkeypatch, name, value)


# --- shared by every instance, exact under concurrency -------------------------------------


def test_two_instances_on_one_database_share_the_send_limits(app, user, tmp_path,
                                                              app_config):
    other = create_app(base_config(tmp_path, **app_config))
    assert other.config["SQLALCHEMY_DATABASE_URI"] == app.config["SQLALCHEMY_DATABASE_URI"]
    user_id = user.id
    for n in range(3):
        passcode_email(f"b{n}@example.com", user_id)
    passcode_sms(PHONE, user_id)

    with other.app_context():
        passcode_email("b3@example.com", user_id)  # the 5th for the account
        error = refused(passcode_email, "b4@example.com", user_id)
        assert "Try again in 15 minutes" in error.user_message
        error = refused(passcode_sms, PHONE)  # the interval to the number
        assert "still valid" in error.user_message
        db.session.remove()

    refused(passcode_email, "b5@example.com", user_id)
    assert outbox_count() == 5


def test_concurrent_passcode_sends_for_one_account_deliver_exactly_the_limit(app, user,
                                                                           tmp_path, app_config):
    instances = [app, create_app(base_config(tmp_path, **app_config))]
    user_id = user.id
    db.session.commit()
    threads = 12
    start = threading.Barrier(threads)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(number):
        instance = instances[number % 2]
        try:
            with instance.app_context():
                start.wait(timeout=30)
                try:
                    passcode_email(f"race{number}@example.com", user_id)
                    outcome = "sent"
                except ThrottledError as exc:
                    outcome = exc.reason
                finally:
                    db.session.remove()
        except BaseException as exc:  # reported by the assertion below
            outcome = repr(exc)
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in workers), "a send never finished"

    assert sorted(outcomes) == ["sent"] * 5 + ["throttled:account"] * 7
    db.session.expire_all()
    assert outbox_count() == 5
    assert len(throttle_events()) == 7
