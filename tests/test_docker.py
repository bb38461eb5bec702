"""The container's parts that run without Docker: ``docker/entrypoint`` (migrations, then
gunicorn with ``idp.gunicorn_conf``; a command instead of the server; the demo seed) run from
the checkout as the image runs it, and ``docker/compose.yaml`` checked against the project
(its settings are the IdP's own and valid, its files and build targets exist)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from alembic.script import ScriptDirectory

from idp.config import SETTINGS, ConfigError, check_production, load_settings
from tests.conftest import PRODUCTION_SETTINGS
from tests.smtp_server import free_port

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0


def image_environment(tmp_path: Path, **settings: str) -> dict:
    """The environment the image gives the entrypoint (see docker/Dockerfile), with the
    virtualenv's commands on the PATH; the image's package carries its templates and
    migrations, the checkout's are named by IDP_HOME here."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IDP_", "GUNICORN_", "PROMETHEUS_")) and k != "WEB_CONCURRENCY"}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "IDP_ENV": "production",
        "IDP_HOME": str(ROOT),
        "IDP_INSTANCE_PATH": str(tmp_path / "instance"),
        "IDP_DATABASE_URL": "sqlite:///" + str(tmp_path / "idp.db"),
        "GUNICORN_WORKERS": "1",
        "IDP_LOG_FORMAT": "json",
    })
    env.update(settings)
    return env


def run_entrypoint(env: dict, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)


def applied_migrations(tmp_path: Path) -> set[str]:
    with sqlite3.connect(tmp_path / "idp.db") as connection:
        rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return {row[0] for row in rows}


def head_migrations() -> set[str]:
    """The heads of the core's branch and of the MFA plugin's (the image enables it)."""
    folders = [ROOT / "migrations" / "versions",
               ROOT / "plugins" / "mfa" / "migrations" / "versions"]
    script = ScriptDirectory(str(ROOT / "migrations"),
                             version_locations=[str(folder) for folder in folders])
    return set(script.get_heads())


def test_the_entrypoint_migrates_then_serves_with_gunicorn(tmp_path):
    port = free_port()
    env = image_environment(tmp_path, **{**PRODUCTION_SETTINGS,
                                         "IDP_ISSUER": f"http://127.0.0.1:{port}",
                                         "GUNICORN_BIND": f"127.0.0.1:{port}"})
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(["sh", str(ENTRYPOINT)], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if requests.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)

        assert requests.get(base + "/readyz", timeout=5).json() == {"status": "ready"}
        discovery = requests.get(base + "/.well-known/openid-configuration", timeout=5).json()
        assert discovery["issuer"] == base
        assert applied_migrations(tmp_path) == head_migrations()
        # gunicorn.conf.py's worker settings: one worker, as GUNICORN_WORKERS says.
        workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                 text=True, check=False, timeout=10).stdout.split()
        assert len(workers) == 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(STOP_TIMEOUT)
        log.close()
    assert server.returncode == 0, (tmp_path / "server.log").read_text()


def test_the_entrypoint_refuses_an_unsafe_production_configuration_with_a_clear_message(
        tmp_path):
    env = image_environment(tmp_path, **{**PRODUCTION_SETTINGS, "IDP_SECRET_KEY": ""})
    done = run_entrypoint(env)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "IDP_SECRET_KEY must be set" in output
    assert "Traceback" not in output
    assert not (tmp_path / "idp.db").exists() or not applied_migrations(tmp_path)


def test_sqlite_with_two_workers_is_refused_by_the_entrypoint(tmp_path):
    env = image_environment(tmp_path, **{**PRODUCTION_SETTINGS, "GUNICORN_WORKERS": "2"})
    done = run_entrypoint(env)
    assert done.returncode != 0
    assert "SQLite serves one worker only" in done.stdout + done.stderr


def test_the_entrypoint_runs_a_given_command_after_the_migrations(tmp_path):
    env = image_environment(tmp_path, **PRODUCTION_SETTINGS)
    done = run_entrypoint(env, "idp", "clients", "list")
    assert done.returncode == 0, done.stderr
    assert applied_migrations(tmp_path) == head_migrations()


def test_the_entrypoint_seeds_the_demo_once_when_asked(tmp_path):
    env = image_environment(tmp_path, IDP_ENV="development", IDP_DEMO_SEED="1")
    first = run_entrypoint(env, "true")
    assert first.returncode == 0, first.stderr
    assert "Demo data created." in first.stdout
    registered = json.loads((tmp_path / "instance" / "demo_clients.json").read_text())
    assert set(registered) == {"click-n-ship", "customer-onboarding-portal",
                               "informed-delivery"}
    assert (tmp_path / "instance" / "demo_clients.json").stat().st_mode & 0o077 == 0

    again = run_entrypoint(env, "true")
    assert again.returncode == 0, again.stderr
    assert "demo seed skipped" in again.stdout


# --- docker/compose.yaml ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_the_idp_with_postgresql_redis_a_mail_catcher_and_the_demo_apps(compose):
    services = compose["services"]
    assert {"postgres", "redis", "mail", "idp", "click-n-ship", "customer-onboarding-portal",
            "informed-delivery"} <= set(services)
    idp = services["idp"]["environment"]
    assert idp["IDP_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert idp["IDP_REDIS_URL"].startswith("redis://redis:")
    assert idp["IDP_SMTP_HOST"] == "mail"
    for name in ("click-n-ship", "customer-onboarding-portal", "informed-delivery"):
        app = services[name]
        assert app["network_mode"] == "service:idp"
        assert app["command"][0] == name
        assert app["environment"]["IDP_ISSUER"] == idp["IDP_ISSUER"]
    # Every published port is on loopback only.
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_compose_sets_only_settings_the_idp_knows_and_they_pass_its_checks(compose):
    from plugins.mfa import MfaPlugin

    known = set(SETTINGS) | set(MfaPlugin.default_config)
    environment = {k: str(v) for k, v in compose["services"]["idp"]["environment"].items()}
    # The entrypoint's own switches are read before the IdP starts.
    known |= set(re.findall(r"\$\{(IDP_[A-Z_]+)", ENTRYPOINT.read_text()))
    unknown = {k for k in environment if k.startswith("IDP_")} - known
    assert not unknown, f"compose.yaml sets settings the IdP does not have: {unknown}"
    # ${VAR:-default} as compose expands it with nothing set.
    expanded = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in environment.items()}
    config = load_settings(environ=expanded)
    check_production(config)  # development, but the choices must be valid
    with pytest.raises(ConfigError, match="IDP_DEV_OUTBOX"):
        check_production({**config, "IDP_ENV": "production"})


def test_compose_builds_targets_and_copies_files_that_exist(compose):
    dockerfile = DOCKERFILE.read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.M))
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            assert build["target"] in stages
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
        *sources, _destination = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"the Dockerfile copies a missing {source}"
    assert "USER idp" in dockerfile and "HEALTHCHECK" in dockerfile
    assert os.access(ENTRYPOINT, os.X_OK)


def test_gunicorn_stops_at_once_with_the_message_when_the_configuration_is_unsafe(tmp_path):
    env = image_environment(tmp_path, **{**PRODUCTION_SETTINGS, "IDP_SECRET_KEY": "short",
                                         "GUNICORN_BIND": f"127.0.0.1:{free_port()}"})
    done = subprocess.run([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                          check=False)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Error: Unsafe production configuration: IDP_SECRET_KEY must be set" in output
    assert "Traceback" not in output
