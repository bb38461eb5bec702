"""Sliding-window rate limits (idp.ratelimit), in the database and in Redis alike: counting,
sliding, refusals that record nothing, limits shared by several instances, and exact counts
under concurrency."""

from __future__ import annotations

import pytest

from idp import create_app, ratelimit
from idp.extensions import db
from tests.concurrency import in_app_contexts, run_in_threads
from tests.conftest import base_config
from tests.ratelimit_support import events_of, hit

T0 = 1_800_000_000.0


@pytest.fixture
def app_config(rate_limit_backend):
    return rate_limit_backend



def events(key) -> list[float]:
    return events_of(key)


def test_allows_count_events_in_the_window_then_refuses_with_seconds_until_a_slot_frees(app):
    limit = ratelimit.Limit("account", "t:account:1", 3, 60)
    assert hit(limit, now=T0) is None
    assert hit(limit, now=T0 + 10) is None
    assert hit(limit, now=T0 + 20) is None

    refused = hit(limit, now=T0 + 25)

    assert refused == (limit, 35)  # the event at T0 leaves the window at T0 + 60
    assert events("t:account:1") == [T0, T0 + 10, T0 + 20]


def test_window_slides_so_events_older_than_the_window_no_longer_count(app):
    limit = ratelimit.Limit("account", "t:account:2", 2, 60)
    assert hit(limit, now=T0) is None
    assert hit(limit, now=T0 + 30) is None
    assert hit(limit, now=T0 + 59) is not None

    # At T0 + 60 the first event has left the window; the one at T0 + 30 still counts.
    assert hit(limit, now=T0 + 60) is None
    assert hit(limit, now=T0 + 61) == (limit, 29)
    assert hit(limit, now=T0 + 90) is None
    # Events that left the window are not kept.
    assert events("t:account:2") == [T0 + 60, T0 + 90]


def test_refused_hits_record_nothing_so_hammering_does_not_extend_the_lockout(app):
    limit = ratelimit.Limit("destination", "t:dest:1", 1, 30)
    assert hit(limit, now=T0) is None
    for second in range(1, 30):
        refused = hit(limit, now=T0 + second)
        assert refused == (limit, 30 - second)
    assert events("t:dest:1") == [T0]

    assert hit(limit, now=T0 + 30) is None


def test_a_refusal_by_one_limit_records_nothing_against_the_others(app):
    loose = ratelimit.Limit("phone", "t:phone:1", 10, 3600)
    tight = ratelimit.Limit("destination", "t:dest:2", 1, 30)
    assert hit(loose, tight, now=T0) is None

    refused = hit(loose, tight, now=T0 + 1)

    assert refused == (tight, 29)
    assert events("t:phone:1") == [T0]
    assert events("t:dest:2") == [T0]


def test_the_first_refusing_limit_in_the_callers_order_is_reported(app):
    first = ratelimit.Limit("destination", "t:z-first", 1, 30)
    second = ratelimit.Limit("account", "t:a-second", 1, 900)
    assert hit(first, second, now=T0) is None

    assert hit(first, second, now=T0 + 1) == (first, 29)
    assert hit(second, first, now=T0 + 1) == (second, 899)


def test_keys_are_counted_separately(app):
    one = ratelimit.Limit("destination", "t:dest:one", 1, 30)
    two = ratelimit.Limit("destination", "t:dest:two", 1, 30)
    assert hit(one, now=T0) is None
    assert hit(two, now=T0 + 1) is None
    assert hit(one, now=T0 + 2) is not None


def test_retry_after_counts_from_the_event_that_frees_a_slot_when_a_limit_was_lowered(app):
    generous = ratelimit.Limit("account", "t:account:3", 5, 100)
    for second in range(5):
        assert hit(generous, now=T0 + second * 10) is None  # T0, +10, +20, +30, +40

    lowered = ratelimit.Limit("account", "t:account:3", 2, 100)
    refused = hit(lowered, now=T0 + 50)

    # Four events must leave before a third fits: the one at T0 + 30 leaves at T0 + 130.
    assert refused == (lowered, 80)
    assert hit(lowered, now=T0 + 129) is not None
    assert hit(lowered, now=T0 + 130) is None


def test_forget_takes_back_one_counted_event(app):
    limit = ratelimit.Limit("destination", "t:dest:3", 1, 30)
    assert hit(limit, now=T0) is None

    ratelimit.forget([limit], T0)
    db.session.commit()

    assert events("t:dest:3") == []
    assert hit(limit, now=T0 + 1) is None


def test_two_instances_on_one_database_share_their_counts(app, tmp_path, app_config):
    other = create_app(base_config(tmp_path, **app_config))  # the same stores as ``app``
    assert other is not app
    assert other.config["SQLALCHEMY_DATABASE_URI"] == app.config["SQLALCHEMY_DATABASE_URI"]
    limit = ratelimit.Limit("account", "t:shared", 2, 900)

    assert hit(limit, now=T0) is None  # counted by the first instance
    with other.app_context():
        assert hit(limit, now=T0 + 1) is None  # and by the second
        assert hit(limit, now=T0 + 2) == (limit, 898)
        db.session.remove()
    assert hit(limit, now=T0 + 3) == (limit, 897)
    assert len(events("t:shared")) == 2


@pytest.mark.parametrize("threads,count,row_exists", [(12, 5, False), (12, 5, True),
                                                     (8, 1, True)])
def test_concurrent_hits_from_several_instances_let_exactly_count_through(
    app, tmp_path, app_config, threads, count, row_exists
):
    instances = [app, create_app(base_config(tmp_path, **app_config))]
    limit = ratelimit.Limit("account", f"t:race:{count}", count, 900)
    if row_exists:  # an event long gone from the window
        assert hit(limit, now=T0 - 10_000) is None
    db.session.commit()
    results = run_in_threads(
        threads, in_app_contexts(instances, lambda n: hit(limit, now=T0 + n / 1000)), 90)
    assert sum(1 for outcome in results if outcome is None) == count
    assert all(outcome[0] == limit for outcome in results if outcome is not None)
    assert len(events(limit.key)) == count
