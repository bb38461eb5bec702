"""The built wheel is the IdP: installed into a new virtualenv outside the checkout (with the
versions of constraints.txt), `idp db upgrade` and `gunicorn idp.wsgi:app` serve it, MFA
plugin included, and a sign-in ends with an ID token."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.conftest import forms, pkce_pair
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Wheel-Password-1"
START_TIMEOUT = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What a build needs from the checkout (copied, so that no build/ folder is left in it).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "CHANGELOG.md",
           "constraints.txt", "idp", "plugins", "templates", "migrations")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_home"))
        else:
            shutil.copy(ROOT / name, source / name)
    # The wheel is built from the source distribution, as a package index would build it.
    builder = tmp_path_factory.mktemp("builder")
    subprocess.run([sys.executable, "-m", "venv", str(builder)], check=True, timeout=300)
    subprocess.run([str(builder / "bin" / "pip"), "install", "--quiet",
                    "--disable-pip-version-check", "build"], check=True, timeout=600)
    subprocess.run([str(builder / "bin" / "python"), "-m", "build", "--sdist", "--outdir",
                    str(out), str(source)], check=True, timeout=600, cwd=out,
                   capture_output=True)
    (sdist,) = out.glob("idp-*.tar.gz")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(out), str(sdist)], check=True, timeout=600, cwd=out)
    (built,) = out.glob("idp-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A new virtualenv with the wheel; returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                    "-c", str(ROOT / "constraints.txt"), str(wheel)],
                   check=True, timeout=900, cwd=venv)
    return venv / "bin"


def test_the_wheel_carries_the_templates_the_migrations_and_the_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "idp/_home/templates/base.html" in names
    assert "idp/_home/templates/email/passcode.html" in names
    assert "plugins/mfa/templates/mfa/passcode.html" in names  # the plugin's own
    assert "plugins/mfa/templates/email/verify_email.html" in names
    assert "idp/_home/migrations/env.py" in names
    assert any(n.startswith("idp/_home/migrations/versions/0001_") for n in names)
    assert "plugins/mfa/migrations/versions/0001_mfa_tables.py" in names  # its own branch
    assert "idp/wsgi.py" in names and "idp/gunicorn_conf.py" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: joserfc" in text
    assert "License-Expression: Apache-2.0" in text


def run(bin_dir: Path, cwd: Path, env: dict, *args: str, stdin: str | None = None):
    done = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_an_installed_wheel_serves_a_sign_in_outside_the_checkout(installed, tmp_path):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IDP_", "GUNICORN_", "PROMETHEUS_", "PYTHON"))}
    env.update(IDP_ISSUER=issuer, IDP_SECRET_KEY="wheel-test-secret-key-0123456789-abcdefghij",
               IDP_DEV_OUTBOX="1", GUNICORN_WORKERS="1", GUNICORN_ACCESS_LOG="")
    run(installed, tmp_path, env, "idp", "db", "upgrade")
    assert (tmp_path / "instance" / "idp.db").is_file()  # the working directory's instance/
    run(installed, tmp_path, env, "idp", "users", "create", "--username", "olga",
        "--email", "olga@example.com", "--created-at", "2024-05-01", "--password-stdin",
        stdin=PASSWORD + "\n")
    client = json.loads(run(installed, tmp_path, env, "idp", "clients", "create",
                            "--name", "Wheel app", "--redirect-uri", f"{issuer}/cb"))

    server = subprocess.Popen(
        [str(installed / "gunicorn"), "-c", "python:idp.gunicorn_conf", "idp.wsgi:app",
         "--bind", f"127.0.0.1:{port}"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with httpx.Client(base_url=issuer, timeout=10.0) as http:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, "no server"
                time.sleep(0.2)
            claims = sign_in(http, client)
    finally:
        stop_process(server)
    assert claims["iss"] == issuer
    assert claims["acr"] == "urn:idp:acr:pwd" and claims["amr"] == ["pwd"]


def sign_in(http: httpx.Client, client: dict) -> dict:
    """Authorize, type the password, Not Now to the MFA offer, redeem the code."""
    verifier, challenge = pkce_pair()
    query = {"response_type": "code", "client_id": client["client_id"],
             "redirect_uri": client["redirect_uris"][0], "scope": "openid", "state": "s1",
             "nonce": "n1", "code_challenge": challenge, "code_challenge_method": "S256"}
    page = follow(http, http.get("/authorize?" + urlencode(query)))
    assert "Log In" in page.text
    page = follow(http, post_form(http, page, {"username": "olga", "password": PASSWORD,
                                               "submit": "1"}))
    assert "Not Now" in page.text, page.text[:500]
    answer = post_form(http, page, {"not_now": "1"})
    answer = follow(http, answer, stop_at=client["redirect_uris"][0])
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    basic = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode())
    token = http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                      "redirect_uri": client["redirect_uris"][0],
                                      "code_verifier": verifier},
                      headers={"Authorization": "Basic " + basic.decode()})
    assert token.status_code == 200, token.text
    payload = token.json()["id_token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def post_form(http: httpx.Client, page: httpx.Response, data: dict) -> httpx.Response:
    form = forms(page.text)[0]
    fields = {k: v for k, v in form["fields"].items() if "csrf_token" in k}
    fields.update(data)
    return http.post(form["action"] or page.url.path, data=fields)


def follow(http: httpx.Client, response: httpx.Response, stop_at: str | None = None,
           limit: int = 10) -> httpx.Response:
    for _ in range(limit):
        if response.status_code not in (301, 302, 303):
            return response
        location = response.headers["Location"]
        if stop_at and location.startswith(stop_at):
            return response
        response = http.get(location)
    raise AssertionError("too many redirects")
