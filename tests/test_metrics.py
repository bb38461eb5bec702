"""Prometheus metrics at /metrics: sign-ins, MFA checks, message sends, throttle hits, token
grants and request latency; the bearer-token protection; no user data in any label; and, under
gunicorn with gunicorn.conf.py, one sum over every worker (multiprocess mode)."""

from __future__ import annotations

import os
import re
import runpy
import secrets
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from idp import create_app
from idp.config import ConfigError
from tests.conftest import (
    PASSWORD,
    PRODUCTION_SETTINGS,
    base_config,
    basic_auth,
    make_client,
    make_user,
)
from tests.mfa_journeys import *  # noqa: F403
from tests.mfa_journeys import age_passcodes, enroll_by_sms, wrong
from tests.mfa_support import *  # noqa: F403
from tests.mfa_support import AFTER_CUTOFF, MfaBrowser, heading
from tests.smtp_server import free_port
from tests.token_helpers import service_client

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
METRICS_TOKEN = "metrics-token-" + "k" * 40
PRODUCTION = PRODUCTION_SETTINGS
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0


@pytest.fixture
def app_config():
    """The core alone (the MFA tests below turn the plugin on)."""
    return {}


# --- reading the exposition -----------------------------------------------------------------


class Samples(dict):
    """Sample values by (name, labels)."""

    def __call__(self, name: str, **labels: str) -> float:
        return self.get((name, tuple(sorted(labels.items()))), 0.0)

    def labels_of(self, name: str, label: str) -> set[str]:
        return {dict(key)[label] for (sample, key) in self if sample == name}


def parse(text: str) -> Samples:
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(http, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.status_code
    return parse(response.get_data(as_text=True))


def names_and_labels(text: str) -> str:
    """The exposition without its sample values: comments, metric names and labels."""
    return "\n".join(line if line.startswith("#") else line.rsplit(" ", 1)[0]
                     for line in text.splitlines())


def password_attempt(oidc, rp, username, password):
    page = oidc.http.get(oidc.authorize(rp).headers["Location"])
    return oidc.submit(page, {"username": username, "password": password}, button="submit")


# --- sign-ins, throttles, token grants ------------------------------------------------------


def test_password_sign_ins_are_counted_by_result(client, oidc, rp, alice):
    before = scrape(client)
    oidc.sign_in(rp[0])
    client.delete_cookie("idp_session")
    assert password_attempt(oidc, rp[0], "alice", "wrong password").status_code == 400
    assert password_attempt(oidc, rp[0], "nobody-here", PASSWORD).status_code == 400
    after = scrape(client)

    for result, moved in (("accepted", 1), ("rejected", 1), ("unknown_user", 1),
                          ("throttled", 0), ("disabled", 0)):
        delta = (after("idp_sign_ins_total", result=result)
                 - before("idp_sign_ins_total", result=result))
        assert delta == moved, result


@pytest.mark.parametrize("app_config", [{"IDP_LOGIN_LIMIT_PER_USER": 2}])
def test_a_throttled_login_counts_as_throttled_and_as_a_hit_of_its_limit(client, oidc, rp,
                                                                          alice):
    before = scrape(client)
    for _ in range(2):
        assert password_attempt(oidc, rp[0], "alice", "wrong").status_code == 400
    assert password_attempt(oidc, rp[0], "alice", PASSWORD).status_code == 429
    after = scrape(client)

    assert (after("idp_sign_ins_total", result="throttled")
            - before("idp_sign_ins_total", result="throttled")) == 1
    assert (after("idp_sign_ins_total", result="rejected")
            - before("idp_sign_ins_total", result="rejected")) == 2
    assert (after("idp_throttle_hits_total", limit="user")
            - before("idp_throttle_hits_total", limit="user")) == 1


def test_token_grants_are_counted_by_grant_type_and_result(client, oidc, rp, alice):
    rp_client, secret = rp
    service, service_secret = service_client()
    before = scrape(client)
    code = oidc.sign_in(rp_client)["code"]
    assert oidc.token(rp_client, secret, code).status_code == 200
    assert oidc.token(rp_client, secret, code).status_code == 400  # a replayed code
    assert client.post("/token", data={"grant_type": "client_credentials"},
                       headers=basic_auth(service.client_id, service_secret)).status_code == 200
    assert client.post("/token", data={"grant_type": "password", "username": "alice"},
                       headers=basic_auth(rp_client.client_id, secret)).status_code == 400
    after = scrape(client)

    def delta(grant_type, result):
        return (after("idp_token_grants_total", grant_type=grant_type, result=result)
                - before("idp_token_grants_total", grant_type=grant_type, result=result))

    assert delta("authorization_code", "success") == 1
    assert delta("authorization_code", "invalid_grant") == 1
    assert delta("client_credentials", "success") == 1
    assert delta("other", "unsupported_grant_type") == 1
    assert "password" not in after.labels_of("idp_token_grants_total", "grant_type")


# --- request latency --------------------------------------------------------------------------


def test_request_latency_is_observed_per_endpoint_name_never_per_path(client):
    before = scrape(client)
    client.get("/.well-known/openid-configuration")
    client.get("/jwks.json")
    client.get("/jwks.json")
    client.get("/no/such/page-7c1e")
    client.get("/healthz")
    response = client.get("/metrics")
    after = parse(response.get_data(as_text=True))

    def count(endpoint):
        return (after("idp_request_duration_seconds_count", endpoint=endpoint)
                - before("idp_request_duration_seconds_count", endpoint=endpoint))

    assert count("oauth.discovery") == 1
    assert count("oauth.jwks") == 2
    assert count("unmatched") == 1
    assert count("healthz") == count("metrics") == 0
    assert (after("idp_http_responses_total", endpoint="unmatched", status="4xx")
            - before("idp_http_responses_total", endpoint="unmatched", status="4xx")) == 1
    buckets = {dict(labels)["le"] for (name, labels) in after
               if name == "idp_request_duration_seconds_bucket"
               and dict(labels)["endpoint"] == "oauth.jwks"}
    assert {"0.001", "0.005", "0.1", "1.0", "5.0", "+Inf"} <= buckets
    assert "page-7c1e" not in response.get_data(as_text=True)


# --- who may read them -----------------------------------------------------------------------


@pytest.mark.parametrize("app_config", [{"IDP_METRICS_TOKEN": METRICS_TOKEN}])
def test_with_a_token_set_metrics_need_it_as_a_bearer_token(client):
    for headers in ({}, {"Authorization": "Bearer wrong-token"},
                    {"Authorization": f"Bearer {METRICS_TOKEN}x"},
                    {"Authorization": f"Basic {METRICS_TOKEN}"},
                    {"Authorization": METRICS_TOKEN}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"idp_" not in refused.get_data()

    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    assert "idp_sign_ins_total" in response.get_data(as_text=True)


def test_in_development_metrics_are_served_without_a_token(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "# TYPE idp_request_duration_seconds histogram" in response.get_data(as_text=True)


def test_in_production_without_a_token_there_is_no_metrics_page(tmp_path, monkeypatch):
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    http = create_app(base_config(tmp_path, **PRODUCTION)).test_client()
    assert http.get("/metrics").status_code == 404

    protected = create_app(base_config(tmp_path, **PRODUCTION, IDP_METRICS_TOKEN=METRICS_TOKEN))
    http = protected.test_client()
    assert http.get("/metrics").status_code == 401
    assert http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
                    ).status_code == 200


def test_a_short_metrics_token_is_refused_in_production(tmp_path, monkeypatch):
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    with pytest.raises(ConfigError, match="IDP_METRICS_TOKEN"):
        create_app(base_config(tmp_path, **PRODUCTION, IDP_METRICS_TOKEN="short"))


# --- the MFA plugin ---------------------------------------------------------------------------


class TestWithTheMfaPlugin:
    @pytest.fixture
    def app_config(self, mfa_settings):
        return {**mfa_settings, "IDP_MFA_MAX_FAILURES": 3}

    @staticmethod
    def delta(before, after, name, **labels):
        return after(name, **labels) - before(name, **labels)

    def test_passcode_checks_are_counted_by_factor_and_result(self, client, mfa, enrolled,
                                                              cohort_rp):
        before = scrape(client)
        page = mfa.start(cohort_rp[0])
        assert heading(page) == "Multifactor Authentication (MFA)"
        code = mfa.sms_passcode()
        page = mfa.submit_passcode(page, wrong(code))
        age_passcodes(600)
        page = mfa.submit_passcode(page, code)
        assert "expired" in page.get_data(as_text=True)
        page = mfa.resend(page)
        mfa.finish(mfa.submit_passcode(page, mfa.sms_passcode()))
        after = scrape(client)

        def checks(result):
            return self.delta(before, after, "idp_mfa_challenges_total", factor="sms",
                              purpose="challenge", result=result)

        assert (checks("wrong_code"), checks("expired"), checks("success")) == (1, 1, 1)
        assert self.delta(before, after, "idp_delivery_messages_total", channel="sms",
                          kind="passcode", result="sent") == 2
        assert self.delta(before, after, "idp_sign_ins_total", result="accepted") == 1

    def test_a_lockout_and_the_tries_refused_during_it_are_counted(self, client, mfa, enrolled,
                                                                   cohort_rp):
        before = scrape(client)
        page = mfa.start(cohort_rp[0])
        code = mfa.sms_passcode()
        for _ in range(3):
            page = mfa.submit_passcode(page, wrong(code))
        assert "Too many failed attempts" in page.get_data(as_text=True)
        mfa.submit_passcode(page, code)
        after = scrape(client)

        assert self.delta(before, after, "idp_mfa_lockouts_total") == 1
        assert self.delta(before, after, "idp_mfa_challenges_total", factor="sms",
                          purpose="challenge", result="wrong_code") == 3
        assert self.delta(before, after, "idp_mfa_challenges_total", factor="sms",
                          purpose="challenge", result="locked") == 1

    def test_a_send_refused_by_a_throttle_is_counted_as_throttled(self, app, client, mfa,
                                                                  enrolled, cohort_rp):
        app.config["IDP_PASSCODE_RESEND_SECONDS"] = 30
        page = mfa.start(cohort_rp[0])
        before = scrape(client)
        mfa.resend(page)
        after = scrape(client)
        assert self.delta(before, after, "idp_delivery_messages_total", channel="sms",
                          kind="passcode", result="throttled") == 1
        assert self.delta(before, after, "idp_throttle_hits_total", limit="destination") == 1

    def test_no_metric_names_the_user_a_destination_or_a_secret_of_a_full_mfa_sign_in(
            self, app, client, browser, mail, sms):
        username = "metrics-" + secrets.token_hex(4)
        email = f"{username}@example.com"
        phone = "(202) 555-0187"
        user = make_user(username, created_at=AFTER_CUTOFF)
        rp, client_secret = make_client(client_id="rp-" + secrets.token_hex(6),
                                        settings={"mfa_policy": "always",
                                                  "remembered_devices": True})
        recovery_codes = enroll_by_sms(browser(), rp, username=username, number=phone)

        person = MfaBrowser(app.test_client(), mail, sms)
        page = person.start(rp, username)
        code = person.sms_passcode(to="+12025550187")
        page = person.submit_passcode(page, wrong(code))
        params = person.finish(person.submit_passcode(page, code))
        tokens = person.token(rp, client_secret, params["code"]).get_json()
        assert "id_token" in tokens

        exposition = client.get("/metrics").get_data(as_text=True)
        assert "idp_mfa_challenges_total" in exposition
        passcodes = {re.search(r"\b(\d{6})\b", m["body"]).group(1)
                     for m in person.sms_messages() if re.search(r"\b\d{6}\b", m["body"])}
        links = re.findall(r"token=(\S+)", "\n".join(m.text for m in mail.messages))
        values = {
            username, email, user.sub, PASSWORD, rp.client_id, client_secret, params["code"],
            params["state"], tokens["access_token"], tokens["id_token"], phone,
            "+12025550187", "2025550187", "555-0187", "0187", *passcodes, *links,
            *recovery_codes, *[c.replace("-", "") for c in recovery_codes],
        }
        assert passcodes and links
        labelled = names_and_labels(exposition)
        assert [value for value in values if value in labelled] == []


# --- gunicorn: one sum over every worker ----------------------------------------------------


def test_gunicorn_conf_prepares_a_temporary_metrics_directory_and_removes_it(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.setenv("_IDP_METRICS_TEMPORARY_DIR", "")
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("GUNICORN_TIMEOUT", "45")
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    try:
        assert directory.is_dir()
        assert (settings["workers"], settings["timeout"]) == (3, 45)
        (directory / "counter_12345.db").write_bytes(b"stale")
        settings["on_starting"](SimpleNamespace(cfg=SimpleNamespace(workers=5)))
        assert list(directory.iterdir()) == []
        assert os.environ["GUNICORN_WORKERS"] == "5"  # what the production checks read
        settings["on_exit"](None)
        assert not directory.exists()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_bad_worker_count_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.setenv("_IDP_METRICS_TEMPORARY_DIR", "")
    monkeypatch.setenv("GUNICORN_WORKERS", "many")
    with pytest.raises(ValueError, match="GUNICORN_WORKERS"):
        runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def worker_pids(directory: Path) -> set[str]:
    """Workers that observed a request: each keeps its histogram in its own file."""
    return {path.stem.rsplit("_", 1)[-1] for path in directory.glob("histogram_*.db")}


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


def test_under_gunicorn_metrics_add_up_the_requests_of_every_worker(tmp_path, migrated_db):
    shutil.copy(migrated_db, tmp_path / "idp.db")
    metrics_dir = tmp_path / "metrics"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IDP_", "GUNICORN_", "WEB_CONCURRENCY", "PROMETHEUS_"))}
    env.update(IDP_ENV="development", IDP_ISSUER=url, IDP_PLUGINS="",
               IDP_INSTANCE_PATH=str(tmp_path / "instance"),
               IDP_DATABASE_URL="sqlite:///" + str(tmp_path / "idp.db"),
               IDP_SECRET_KEY=secrets.token_urlsafe(48), IDP_LOG_LEVEL="WARNING",
               IDP_METRICS_TOKEN=METRICS_TOKEN, GUNICORN_WORKERS="2",
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)

        served = 0

        def fetch(_):
            return requests.get(url + "/.well-known/openid-configuration",
                                timeout=HTTP_TIMEOUT).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            # Until both workers have served some: a worker still booting on a busy machine
            # leaves every request to the other for a while.
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                statuses = list(pool.map(fetch, range(12)))
                assert statuses == [200] * 12
                served += len(statuses)
                if len(worker_pids(metrics_dir)) >= 2:
                    break
        assert len(worker_pids(metrics_dir)) == 2, "one worker served every request"

        token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert requests.get(url + "/metrics", timeout=HTTP_TIMEOUT).status_code == 401
        for _ in range(4):  # whichever worker answers, it reports the sum
            response = requests.get(url + "/metrics", headers=token, timeout=HTTP_TIMEOUT)
            assert response.status_code == 200
            samples = parse(response.text)
            assert samples("idp_request_duration_seconds_count",
                           endpoint="oauth.discovery") == served
            assert samples("idp_http_responses_total", endpoint="oauth.discovery",
                           status="2xx") == served
    finally:
        stop(process)
    assert process.returncode is not None
