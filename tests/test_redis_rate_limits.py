"""Rate limits in Redis (``IDP_REDIS_URL``): every hit is one atomic script, all or nothing
across its limits; answers equal the database backend's for the same events; keys expire;
events are taken back; nothing connects before the first use; when Redis does not answer,
throttled actions are refused (fail closed) with a "try again shortly" answer, never a 500;
``/readyz`` checks Redis too."""

from __future__ import annotations

import logging
import random
import time

import pytest

from idp import create_app, ratelimit
from idp.config import ConfigError
from idp.delivery import ThrottledError, send_email, send_sms
from idp.extensions import db
from idp.maintenance import prune
from idp.models import AuditEvent, OutboxMessage, RateCounter
from tests.concurrency import in_app_contexts, run_in_threads
from tests.conftest import PASSWORD, base_config, forms
from tests.ratelimit_support import events_of, hit
from tests.services.redis_server import free_port

T0 = 1_800_000_000.0
DOWN_PASSWORD = "redis-pass-that-must-not-be-logged"


@pytest.fixture
def app_config(redis_url):
    return {"IDP_REDIS_URL": redis_url}


def redis():
    return ratelimit.backend().client



# --- where the counters are ----------------------------------------------------------------


def test_counters_live_in_redis_under_prefixed_keys_and_not_in_the_database(app):
    limit = ratelimit.Limit("account", "t:account:1", 2, 60)
    assert hit(limit, now=T0) is None

    assert redis().zcard("idp:rl:t:account:1") == 1
    assert db.session.scalar(db.select(db.func.count()).select_from(RateCounter)) == 0


def test_creating_the_app_connects_to_nothing(tmp_path, database_url):
    closed = f"redis://:{DOWN_PASSWORD}@127.0.0.1:{free_port()}/0"

    app = create_app(base_config(tmp_path, IDP_REDIS_URL=closed))

    store = ratelimit.backend(app)
    assert isinstance(store, ratelimit.RedisBackend)
    assert store._client is None


def test_a_redis_url_of_another_scheme_stops_the_start_without_echoing_it(tmp_path):
    with pytest.raises(ConfigError, match="IDP_REDIS_URL") as info:
        create_app(base_config(tmp_path, IDP_REDIS_URL="http://user:hunter2@cache:6379"))
    assert "hunter2" not in str(info.value)


# --- atomic, all or nothing ------------------------------------------------------------------


def run_at_once(instances, count, work):
    """Run ``work(number)`` in ``count`` threads started together, each in an app context of
    one of ``instances``; returns the results in thread order."""
    return run_in_threads(count, in_app_contexts(instances, work))


def test_concurrent_hits_over_overlapping_limits_record_all_or_nothing(app, tmp_path,
                                                                      app_config):
    instances = [app, create_app(base_config(tmp_path, **app_config))]
    shared = ratelimit.Limit("account", "t:shared", 5, 900)
    own = [ratelimit.Limit("destination", f"t:own:{n}", 1, 30) for n in range(20)]
    for number in range(0, 20, 2):  # even threads' own limits are used up already
        assert hit(own[number], now=T0) is None

    outcomes = run_at_once(instances, 20, lambda n: ratelimit.hit([own[n], shared],
                                                                   now=T0 + 1 + n / 1000))

    allowed = [n for n, outcome in enumerate(outcomes) if outcome is None]
    assert len(allowed) == 5 and all(n % 2 == 1 for n in allowed)
    assert all(outcomes[n][0] == own[n] for n in range(0, 20, 2))
    assert all(outcomes[n][0] == shared for n in range(1, 20, 2) if n not in allowed)
    # Each allowed hit counted against both of its limits; a refused one against neither.
    assert sorted(events_of("t:shared")) == sorted(T0 + 1 + n / 1000 for n in allowed)
    for number in range(20):
        expected = [T0] if number % 2 == 0 else (
            [T0 + 1 + number / 1000] if number in allowed else [])
        assert events_of(f"t:own:{number}") == expected


# --- the same answers as the database ------------------------------------------------------


def scripted_events(seed: int, steps: int):
    """A reproducible mix of hits over limits sharing some keys, and take-backs."""
    rng = random.Random(seed)
    limits = [
        ratelimit.Limit("destination", "t:dest", 1, 30),
        ratelimit.Limit("account", "t:account", 5, 900),
        ratelimit.Limit("lowered", "t:account", 2, 900),
        ratelimit.Limit("phone", "t:phone", 3, 120),
        ratelimit.Limit("global", "t:global", 8, 60),
    ]
    now, script = T0, []
    for _ in range(steps):
        now += rng.choice([0.0, 0.25, 0.5, 1.0, 3.0, 7.3, 29.9, 30.0, 61.0, 119.5])
        if script and rng.random() < 0.1:
            script.append(("forget", rng.sample(limits, rng.randint(1, 3)), script[-1][2]))
        else:
            script.append(("hit", rng.sample(limits, rng.randint(1, 3)), now))
    return script


def play(script) -> list:
    outcomes = []
    for action, limits, at in script:
        if action == "hit":
            refused = hit(*limits, now=at)
            outcomes.append(None if refused is None else (refused[0].name, refused[1]))
        else:
            ratelimit.forget(limits, at)
            db.session.commit()
    return outcomes


def test_refusals_and_retry_after_equal_the_database_backends_for_the_same_events(
    app, tmp_path
):
    database_app = create_app(base_config(tmp_path))
    assert isinstance(ratelimit.backend(database_app), ratelimit.DatabaseBackend)
    script = scripted_events(seed=20250306, steps=400)

    with database_app.app_context():
        in_database = play(script)
        db.session.remove()
    in_redis = play(script)

    assert in_redis == in_database
    assert sum(outcome is None for outcome in in_redis) > 50
    assert len({outcome for outcome in in_redis if outcome is not None}) > 20


# --- expiry and take-backs -----------------------------------------------------------------


def test_keys_expire_once_their_newest_event_has_left_the_longest_window(app):
    now = time.time()
    brief = ratelimit.Limit("destination", "t:brief", 5, 1)
    assert hit(brief, now=now) is None
    assert 0 < redis().pttl("idp:rl:t:brief") <= 1000

    long_and_brief = [ratelimit.Limit("account", "t:both", 5, 900),
                      ratelimit.Limit("burst", "t:both", 3, 1)]
    assert hit(*long_and_brief, now=now) is None
    assert 899_000 < redis().pttl("idp:rl:t:both") <= 900_000

    deadline = time.monotonic() + 5
    while redis().exists("idp:rl:t:brief") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis().exists("idp:rl:t:brief")
    assert redis().exists("idp:rl:t:both")


def test_a_refused_hit_changes_nothing_not_even_old_events(app):
    limit = ratelimit.Limit("destination", "t:dest", 1, 30)
    other = ratelimit.Limit("account", "t:account", 5, 900)
    assert hit(other, now=T0 - 3600) is None  # long out of its window
    assert hit(limit, now=T0) is None
    ttl = redis().pttl("idp:rl:t:account")

    assert hit(other, limit, now=T0 + 1) == (limit, 29)

    assert events_of("t:account") == [T0 - 3600]
    assert redis().pttl("idp:rl:t:account") <= ttl


def test_forget_takes_back_that_event_from_every_key_and_nothing_else(app):
    one = ratelimit.Limit("destination", "t:one", 3, 30)
    two = ratelimit.Limit("account", "t:two", 3, 900)
    assert hit(one, two, now=T0) is None
    assert hit(one, now=T0 + 1) is None

    ratelimit.forget([one, two], T0)
    ratelimit.forget([one, two], T0 + 99)  # never counted: nothing happens

    assert events_of("t:one") == [T0 + 1]
    assert events_of("t:two") == []


def test_pruning_the_database_leaves_the_redis_counters_alone(app):
    limit = ratelimit.Limit("account", "t:account", 5, 900)
    assert hit(limit, now=time.time()) is None

    assert prune()["rate_counters"] == 0
    assert redis().zcard("idp:rl:t:account") == 1


def test_a_connection_closed_by_redis_is_replaced_without_an_error(app, redis_server):
    limit = ratelimit.Limit("account", "t:account", 5, 900)
    assert hit(limit, now=T0) is None
    admin = redis_server.client()
    try:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    finally:
        admin.close()

    assert hit(limit, now=T0 + 1) is None
    assert events_of("t:account") == [T0, T0 + 1]


# --- Redis not answering: fail closed ------------------------------------------------------


@pytest.fixture
def down_url():
    return f"redis://:{DOWN_PASSWORD}@127.0.0.1:{free_port()}/0"


def attempt(oidc, rp, username, password):
    page = oidc.http.get(oidc.authorize(rp).headers["Location"])
    return oidc.submit(page, {"username": username, "password": password}, button="submit")


class TestRedisUnreachable:
    @pytest.fixture
    def app_config(self, down_url):
        return {"IDP_REDIS_URL": down_url}

    def test_a_password_is_not_checked_the_page_says_try_again_shortly_and_an_error_is_logged(
        self, oidc, rp, alice, caplog
    ):
        with caplog.at_level(logging.INFO):
            response = attempt(oidc, rp[0], "alice", PASSWORD)

        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        html = response.get_data(as_text=True)
        assert "Sign-in is temporarily unavailable" in html and "Try again in a minute" in html
        assert 'role="alert"' in html
        assert forms(html), "the sign-in form is shown again"
        assert db.session.scalar(db.select(db.func.count()).select_from(AuditEvent).where(
            AuditEvent.event.in_(["login_failed", "login_succeeded"]))) == 0
        errors = [r for r in caplog.records
                  if r.levelno == logging.ERROR and r.name == "idp.ratelimit"]
        assert errors and "Redis at redis://127.0.0.1:" in errors[0].getMessage()
        everything = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
        assert DOWN_PASSWORD not in everything and PASSWORD not in everything

    def test_a_wrong_password_is_refused_the_same_way(self, oidc, rp, alice):
        for _ in range(3):
            assert attempt(oidc, rp[0], "alice", "wrong").status_code == 503

    def test_sign_ins_refused_while_redis_is_down_are_counted_as_unavailable(
        self, client, oidc, rp, alice
    ):
        from tests.test_metrics import scrape

        before = scrape(client)
        assert attempt(oidc, rp[0], "alice", PASSWORD).status_code == 503
        after = scrape(client)
        for result, moved in (("unavailable", 1), ("accepted", 0), ("rejected", 0)):
            assert (after("idp_sign_ins_total", result=result)
                    - before("idp_sign_ins_total", result=result)) == moved, result

    def test_passcodes_links_and_text_messages_are_refused_and_email_notices_still_go(
        self, app, alice
    ):
        for send in (
            lambda: send_email("a@example.com", "passcode", {"code": "123456"},
                               kind="passcode", user_id=alice.id),
            lambda: send_email("a@example.com", "test_message", {}, kind="link",
                               user_id=alice.id),
            lambda: send_sms("(202) 555-0143", "notice", {"text": "Changed."}, kind="notice"),
        ):
            with pytest.raises(ThrottledError) as info:
                send()
            assert info.value.reason == "throttled:unavailable"
            assert "right now" in info.value.user_message
            assert "Try again in a minute" in info.value.user_message
        assert db.session.scalar(db.select(db.func.count(OutboxMessage.id))) == 0

        send_email("a@example.com", "password_changed", kind="notice", user_id=alice.id)
        assert db.session.scalar(db.select(db.func.count(OutboxMessage.id))) == 1

    def test_hit_raises_and_forget_lets_the_event_keep_counting(self, app, caplog):
        limit = ratelimit.Limit("account", "t:account", 5, 900)
        with pytest.raises(ratelimit.RateLimitUnavailable):
            ratelimit.hit([limit], now=T0)
        with caplog.at_level(logging.ERROR):
            ratelimit.forget([limit], T0)
        assert any(r.name == "idp.ratelimit" for r in caplog.records)

    def test_readyz_answers_503_without_detail(self, client):
        response = client.get("/readyz")

        assert response.status_code == 503
        assert response.get_json() == {"status": "unavailable"}
        body = response.get_data(as_text=True).lower()
        assert "redis" not in body and DOWN_PASSWORD not in body

    def test_an_unavailable_limit_anywhere_answers_503_try_again_not_500(self, tmp_path,
                                                                          database_url,
                                                                          down_url):
        app = create_app(base_config(tmp_path, IDP_REDIS_URL=down_url))

        def counted():
            ratelimit.hit([ratelimit.Limit("any", "t:any", 1, 60)])
            return "counted"

        app.add_url_rule("/probe", "probe", counted)
        app.add_url_rule("/introspect/probe", "api_probe", counted)
        client = app.test_client()

        page = client.get("/probe")
        api = client.get("/introspect/probe")

        assert page.status_code == 503 and "Try again in a minute" in page.get_data(as_text=True)
        assert api.status_code == 503
        assert api.get_json()["error"] == "temporarily_unavailable"
        assert page.headers["Retry-After"] == api.headers["Retry-After"] == "30"


def test_a_redis_that_never_answers_is_given_up_after_the_timeout(tmp_path, database_url,
                                                                 silent_server):
    url = f"redis://{silent_server.host}:{silent_server.port}/0"
    app = create_app(base_config(tmp_path, IDP_REDIS_URL=url,
                                 IDP_REDIS_TIMEOUT=0.3))
    with app.app_context():
        started = time.monotonic()
        with pytest.raises(ratelimit.RateLimitUnavailable):
            ratelimit.hit([ratelimit.Limit("account", "t:account", 5, 900)], now=T0)
        assert time.monotonic() - started < 5


# --- /readyz -------------------------------------------------------------------------------


def test_readyz_is_ready_when_the_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_without_redis_server_installed_the_tests_fail_naming_the_setup_script(monkeypatch):
    from tests.services import redis_server

    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(redis_server.os, "access", lambda path, mode: False)

    with pytest.raises(pytest.fail.Exception, match="bash tests/services/setup.sh"):
        redis_server.start_server()
