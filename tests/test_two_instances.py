"""Two instances of the IdP on one database behave as one identity provider.

The ``deployment`` (once per module and rate-limit store) is what an operator runs behind a
load balancer: one PostgreSQL database migrated with ``idp db upgrade``, the applications and
accounts registered with the ``idp`` command, and two gunicorn instances (two workers each)
on their own loopback ports with the same keys and one issuer, instance A's URL, standing for
the public address. The rate limits are counted in the database, then in one Redis server
both instances share. Email goes to a real SMTP server on loopback, text messages to a
webhook receiver, back-channel logout tokens to another receiver.

A person is a :class:`Browser`: a ``requests`` session, whose cookie jar, like a browser's,
keys cookies by host and not by port, so a cookie set by one instance is sent to the other
as it would be to any instance behind the load balancer. Every request names the instance
that serves it, redirects included: the test plays the load balancer.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest
import requests
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from tests.conftest import forms
from tests.http_receivers import WebhookReceiver
from tests.processes import stop_process
from tests.smtp_server import SmtpServer, free_port

pytestmark = pytest.mark.own_postgresql

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Bounded waits, in seconds.
HTTP_TIMEOUT = 30.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 90.0
MESSAGE_TIMEOUT = 15.0
PARALLEL_TIMEOUT = 120.0

PASSWORD = "Two-Instances-Password-1"
BEFORE_CUTOFF = "2024-05-01"  # MFA is offered: Not Now signs in with the password alone
AFTER_CUTOFF = "2025-06-01"  # MFA is mandatory
CHALLENGE = "Multifactor Authentication (MFA)"
ACR_PWD = "urn:idp:acr:pwd"
ACR_MFA = "urn:idp:acr:mfa"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"

# The limits the instances run with (small, so that a test reaches them quickly).
LOGIN_LIMIT = 3  # IDP_LOGIN_LIMIT_PER_USER
SEND_LIMIT = 5  # IDP_SEND_LIMIT_PER_ACCOUNT
MAX_ATTEMPTS = 3  # IDP_PASSCODE_MAX_ATTEMPTS
MAX_FAILURES = 5  # IDP_MFA_MAX_FAILURES
JWKS_CACHE_SECONDS = 5  # IDP_JWKS_CACHE_SECONDS: a rotated key is published within this time
SLACK = 5.0  # seconds a loaded machine may add to a bound the IdP promises
PARALLEL = 30  # submissions of the right passcode at once
TABS = 6  # other things a browser or an application does several times at once

# Accounts made while the deployment starts: the one any test may sign in with (no test
# changes it), then one of its own for each test that needs it.
OLDER = 2
ENROLLED = 5

_PR_SET_PDEATHSIG = 1


# --- the deployment -----------------------------------------------------------------------


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _quit_with_parent() -> None:
    """In the gunicorn master, before exec: a quick shutdown (SIGQUIT) when the test process
    dies without stopping it."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class Instance:
    """One gunicorn instance of the IdP (two workers) on a free loopback port."""

    def __init__(self, name: str, directory: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"gunicorn-{name}.log"
        self.metrics_dir = directory / f"metrics-{name}"
        self.process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"instance {self.name}"

    def start(self, env: dict[str, str]) -> None:
        env = dict(env, PORT=str(self.port), GUNICORN_BIND=f"127.0.0.1:{self.port}",
                   GUNICORN_WORKERS="2", GUNICORN_GRACEFUL_TIMEOUT="5",
                   PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_quit_with_parent,
            )

    def wait_ready(self, deadline: float) -> None:
        """Wait until ``/readyz`` answers 200 (the database, and Redis when configured)."""
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self} exited with {self.process.returncode} while "
                                     f"starting. Its log:\n{log_tail(self.log_path)}")
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self} did not answer /readyz on {self.url} within "
                                     f"{START_TIMEOUT:.0f} s. Its log:\n"
                                     f"{log_tail(self.log_path)}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to the master; what is left of its process group after a while is
        killed."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process, STOP_TIMEOUT)


@dataclass
class Account:
    username: str
    email: str
    sub: str
    phone: str | None = None

    @property
    def e164(self) -> str:
        return "+1" + "".join(ch for ch in self.phone if ch.isdigit())[-10:]


@dataclass
class App:
    client_id: str
    secret: str
    redirect_uri: str
    post_logout_uri: str
    backchannel_path: str


class Deployment:
    """Two instances, their database, and where their messages arrive."""

    def __init__(self, directory: Path, store: str, database_url: str, connect_kwargs: dict,
                 redis_url: str | None, mail: SmtpServer, sms: WebhookReceiver,
                 apps: WebhookReceiver):
        self.store, self.mail, self.sms, self.apps = store, mail, sms, apps
        self.connect_kwargs = connect_kwargs
        self.a, self.b = Instance("A", directory), Instance("B", directory)
        self.instances = (self.a, self.b)
        self.issuer = self.a.url
        self.clients: dict[str, App] = {}
        self._numbers = itertools.count()
        self.shared_account: Account | None = None
        self._older: list[Account] = []
        self._enrolled: list[Account] = []
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("IDP_", "GUNICORN_", "PROMETHEUS_"))
               and k not in ("PORT", "WEB_CONCURRENCY")}
        env.update({k: str(v) for k, v in mail.settings().items()})
        env.update({
            "IDP_ENV": "production",
            "IDP_ISSUER": self.issuer,
            "IDP_DATABASE_URL": database_url,
            "IDP_SECRET_KEY": secrets.token_urlsafe(48),
            "IDP_ENCRYPTION_KEY": secrets.token_urlsafe(48),
            "IDP_INSTANCE_PATH": str(directory / "instance"),
            "IDP_PLUGINS": "plugins.mfa",
            "IDP_BRAND_NAME": "Two instances",
            "IDP_MAIL_FROM": "no-reply@idp.example",
            "IDP_SMS_BACKEND": "webhook",
            "IDP_SMS_WEBHOOK_URL": sms.url + "/sms",
            "IDP_SMS_WEBHOOK_SECRET": secrets.token_hex(16),
            "IDP_SMS_TIMEOUT": "5",
            "IDP_BACKCHANNEL_TIMEOUT": "5",
            # The mail server and the applications' back-channel receivers are on loopback.
            "IDP_SMTP_ALLOW_PLAINTEXT": "1",
            "IDP_ALLOW_PRIVATE_NETWORK_TARGETS": "1",
            "IDP_DB_STATEMENT_TIMEOUT_MS": "20000",
            # People in these tests are quicker than the resend interval allows.
            "IDP_PASSCODE_RESEND_SECONDS": "0",
            "IDP_SEND_LIMIT_PER_ACCOUNT": str(SEND_LIMIT),
            "IDP_LOGIN_LIMIT_PER_USER": str(LOGIN_LIMIT),
            "IDP_PASSCODE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "IDP_MFA_MAX_FAILURES": str(MAX_FAILURES),
            "IDP_JWKS_CACHE_SECONDS": str(JWKS_CACHE_SECONDS),
            "IDP_LOG_LEVEL": "WARNING",
        })
        if redis_url:
            env["IDP_REDIS_URL"] = redis_url
        self.env = env

    # -- the command line ---------------------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None) -> str:
        """Run ``idp ARGS`` with the instances' settings; returns its output."""
        done = subprocess.run([str(BIN / "idp"), *args], cwd=ROOT, env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
        assert done.returncode == 0, f"idp {' '.join(args)} failed:\n{done.stderr}{done.stdout}"
        return done.stdout

    def register_client(self, client_id: str) -> App:
        base = f"{self.apps.url}/{client_id}"
        data = json.loads(self.cli(
            "clients", "create", "--client-id", client_id, "--name", client_id,
            "--redirect-uri", base + "/callback", "--post-logout-redirect-uri", base + "/",
            "--backchannel-logout-uri", base + "/backchannel-logout",
            "--mfa-policy", "cohort", "--remembered-devices"))
        app = App(client_id, data["client_secret"], base + "/callback", base + "/",
                  f"/{client_id}/backchannel-logout")
        self.clients[client_id] = app
        return app

    def new_account(self, created_at: str) -> Account:
        """A fresh account (``created_at`` decides whether MFA is mandatory)."""
        number = next(self._numbers)
        username = f"user{number}-{secrets.token_hex(3)}"
        email = f"{username}@mail.example"
        data = json.loads(self.cli("users", "create", "--username", username, "--email", email,
                                   "--created-at", created_at, "--password-stdin",
                                   stdin=PASSWORD + "\n"))
        return Account(username, email, data["sub"], phone=f"(202) 555-01{number:02d}")

    def new_enrolled_account(self) -> Account:
        """A fresh account enrolled in MFA by SMS (one passcode sent), signed out."""
        account = self.new_account(AFTER_CUTOFF)
        enroll_by_sms(Browser(self), self.a, self.clients["rp-one"], account)
        return account

    def prepare(self) -> None:
        """Register the applications and the accounts the tests take, several at a time,
        while the instances start; then enroll the accounts that need MFA."""
        self.a.start(self.env)
        self.b.start(self.env)
        with ThreadPoolExecutor(max_workers=4) as pool:
            apps = [pool.submit(self.register_client, name) for name in ("rp-one", "rp-two")]
            older = [pool.submit(self.new_account, BEFORE_CUTOFF) for _ in range(OLDER)]
            newer = [pool.submit(self.new_account, AFTER_CUTOFF) for _ in range(ENROLLED)]
            for future in apps:
                future.result(CLI_TIMEOUT)
            self.shared_account, *self._older = [f.result(CLI_TIMEOUT) for f in older]
            newer = [f.result(CLI_TIMEOUT) for f in newer]
        deadline = time.monotonic() + START_TIMEOUT
        for instance in self.instances:
            instance.wait_ready(deadline)
        with ThreadPoolExecutor(max_workers=len(newer) or 1) as pool:
            enrolled = [pool.submit(enroll_by_sms, Browser(self), self.instances[i % 2],
                                    self.clients["rp-one"], account)
                        for i, account in enumerate(newer)]
            for future in enrolled:
                future.result(PARALLEL_TIMEOUT)
        self._enrolled = newer

    def older_account(self) -> Account:
        """An account of its own for a test: created before the MFA cutoff, not enrolled."""
        return self._older.pop() if self._older else self.new_account(BEFORE_CUTOFF)

    def enrolled_account(self) -> Account:
        """An account of its own for a test, enrolled in MFA by SMS (one passcode sent)."""
        return self._enrolled.pop() if self._enrolled else self.new_enrolled_account()

    # -- the servers ----------------------------------------------------------------------

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {i} ---\n{log_tail(i.log_path)}" for i in self.instances)

    # -- where messages arrive --------------------------------------------------------------

    def texts_to(self, account: Account) -> list[str]:
        return [r.json()["body"] for r in list(self.sms.requests)
                if r.json()["to"] == account.e164]

    def sms_passcode(self, account: Account, count: int) -> str:
        """The passcode of the ``count``-th text message to the account's phone."""
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while len(self.texts_to(account)) < count:
            assert time.monotonic() < deadline, f"text {count} to {account.e164} never came"
            time.sleep(0.05)
        body = self.texts_to(account)[count - 1]
        match = re.search(r"\b(\d{6})\b", body)
        assert match, f"no passcode in {body!r}"
        return match.group(1)

    def email_link(self, account: Account) -> str:
        pattern = re.compile(re.escape(self.issuer) + r"/mfa/email-link\?token=\S+")
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while True:
            for message in reversed(list(self.mail.messages)):
                if account.email in message.rcpt_tos and (found := pattern.search(message.text)):
                    return found.group(0)
            assert time.monotonic() < deadline, f"no verification link to {account.email}"
            time.sleep(0.05)

    def logout_tokens(self, app: App, sid: str) -> list[dict]:
        """The verified claims of the logout tokens ``app`` received for session ``sid``."""
        keyset = KeySet.import_key_set(
            requests.get(self.a.url + "/jwks.json", timeout=HTTP_TIMEOUT).json())
        found = []
        for request in list(self.apps.requests):
            if request.path != app.backchannel_path:
                continue
            token = jwt.decode(request.form()["logout_token"], keyset, algorithms=["RS256"])
            if token.claims.get("sid") == sid:
                found.append(token.claims)
        return found

    # -- the database -----------------------------------------------------------------------

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(**self.connect_kwargs, connect_timeout=10) as connection:
            return connection.execute(sql, params).fetchall()

    def audit_count(self, account: Account, event: str) -> int:
        return self.query(
            "SELECT count(*) FROM audit_events e JOIN users u ON u.id = e.user_id "
            "WHERE u.username = %s AND e.event = %s", account.username, event)[0][0]


@pytest.fixture(scope="module", params=["database", "redis"])
def deployment(request, postgres_server, tmp_path_factory):
    """Two instances sharing one PostgreSQL database, with the rate limits in the database
    and then in one Redis server."""
    store = request.param
    directory = tmp_path_factory.mktemp(f"two-instances-{store}")
    database = f"two_instances_{store}_{os.getpid()}"
    with contextlib.ExitStack() as stack:
        redis_url = None
        if store == "redis":
            redis_server = request.getfixturevalue("redis_server")
            redis_url = redis_server.url(7)  # a logical database of their own, emptied
            with contextlib.closing(redis_server.client(7)) as redis_client:
                redis_client.flushdb()
        url = postgres_server.create_database(database)
        stack.callback(postgres_server.drop_database, database)
        mail = SmtpServer("none").start()
        stack.callback(mail.stop)
        sms = stack.enter_context(WebhookReceiver())
        apps = stack.enter_context(WebhookReceiver())
        idp = Deployment(directory, store, url, postgres_server.connect_kwargs(database),
                         redis_url, mail, sms, apps)
        stack.callback(idp.stop)
        idp.cli("db", "upgrade")
        idp.prepare()
        yield idp


# --- a browser ------------------------------------------------------------------------------


def heading(response: requests.Response) -> str:
    match = re.search(r"<h1>(.*?)</h1>", response.text, re.S)
    return match.group(1).strip() if match else ""


def alerts(response: requests.Response) -> str:
    """The text of every element with ``role="alert"`` on the page."""
    found = re.findall(r'role="alert"[^>]*>(.*?)</', response.text, re.S)
    return " ".join(" ".join(text.split()) for text in found)


def page_path(response: requests.Response) -> str:
    parts = urlsplit(response.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def is_redirect(response: requests.Response) -> bool:
    return response.status_code in (301, 302, 303, 307, 308)


class Browser:
    """A person's browser. Each request is served by the instance the caller names."""

    def __init__(self, idp: Deployment):
        self.idp = idp
        self.http = requests.Session()
        self.state = self.nonce = self.verifier = None

    def copy(self) -> Browser:
        """The same browser (its cookies) on another connection: a second tab."""
        other = Browser(self.idp)
        other.http.cookies.update(self.http.cookies)
        other.state, other.nonce, other.verifier = self.state, self.nonce, self.verifier
        return other

    # -- requests ---------------------------------------------------------------------------

    def get(self, instance: Instance, path: str) -> requests.Response:
        return self.http.get(instance.url + path, allow_redirects=False, timeout=HTTP_TIMEOUT)

    def post(self, instance: Instance, path: str, data: dict) -> requests.Response:
        return self.http.post(instance.url + path, data=data, allow_redirects=False,
                              timeout=HTTP_TIMEOUT)

    def open(self, url: str) -> requests.Response:
        """Open a link (from an email) as it is."""
        return self.http.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)

    def idp_path(self, location: str) -> str | None:
        """The path of a redirect that stays at the IdP (relative, or to its address)."""
        if location.startswith("/"):
            return location
        for instance in self.idp.instances:
            if location.startswith(instance.url + "/"):
                return location[len(instance.url):]
        return None

    def go(self, instance: Instance, response: requests.Response,
           limit: int = 15) -> requests.Response:
        """Follow redirects inside the IdP on ``instance``; stop at a page or at a redirect
        that leaves the IdP."""
        for _ in range(limit):
            assert response.status_code < 500, (
                f"{response.status_code} from {response.url}\n{self.idp.logs()}")
            if not is_redirect(response):
                return response
            path = self.idp_path(response.headers["Location"])
            if path is None:
                return response
            response = self.get(instance, path)
        raise AssertionError("too many redirects")

    def submit(self, instance: Instance, page: requests.Response, data: dict | None = None,
               prefix: str = "", button: str | None = None, index: int = 0,
               follow: bool = True) -> requests.Response:
        """Submit form ``index`` of ``page`` to ``instance``: its CSRF token, ``data`` and
        a button."""
        form = forms(page.text)[index]
        fields = {k: v for k, v in form["fields"].items()
                  if k.startswith(prefix) and "csrf_token" in k}
        fields.update(data or {})
        if button:
            fields[button] = "1"
        response = self.post(instance, form["action"] or page_path(page), fields)
        return self.go(instance, response) if follow else response

    # -- signing in -------------------------------------------------------------------------

    def authorize(self, instance: Instance, app: App, **params: str) -> requests.Response:
        """Arrive from ``app`` with a new authorization request; follows to the first page
        (or straight back to the app)."""
        self.verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest())
        self.state, self.nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        query = {"response_type": "code", "client_id": app.client_id,
                 "redirect_uri": app.redirect_uri, "scope": "openid profile email",
                 "state": self.state, "nonce": self.nonce,
                 "code_challenge": challenge.rstrip(b"=").decode(),
                 "code_challenge_method": "S256", **params}
        return self.go(instance, self.get(instance, "/authorize?" + urlencode(query)))

    def log_in(self, instance: Instance, page: requests.Response, account: Account,
               password: str = PASSWORD, follow: bool = True) -> requests.Response:
        assert heading(page) == "Sign In", heading(page)
        return self.submit(instance, page, {"username": account.username, "password": password},
                           button="submit", follow=follow)

    def start(self, instance: Instance, app: App, account: Account,
              **params: str) -> requests.Response:
        """Authorize and type the password, all on ``instance``; returns what comes next."""
        return self.log_in(instance, self.authorize(instance, app, **params), account)

    def not_now(self, instance: Instance, page: requests.Response) -> requests.Response:
        assert heading(page) == CHALLENGE and "Not Now" in page.text, heading(page)
        return self.submit(instance, page, button="not_now")

    def pass_challenge(self, instance: Instance, page: requests.Response, code: str,
                       remember: bool = False) -> requests.Response:
        assert heading(page) == CHALLENGE, heading(page)
        data = {"passcode": code, "submit": "Submit"}
        if remember:
            data["remember"] = "y"
        return self.submit(instance, page, data)

    def resend(self, instance: Instance, page: requests.Response) -> requests.Response:
        index = next(i for i, f in enumerate(forms(page.text)) if "r-resend" in f["fields"])
        return self.submit(instance, page, {"r-resend": "Resend"}, prefix="r-", index=index)

    def finish(self, instance: Instance, response: requests.Response, app: App) -> dict:
        """Go on to the application (allowing access when asked); returns the parameters
        of the successful authorization response."""
        response = self.go(instance, response)
        if response.status_code == 200 and heading(response) == "Allow access":
            response = self.submit(instance, response, button="allow")
        params = self.callback(response, app)
        assert "code" in params, params
        return params

    def callback(self, response: requests.Response, app: App) -> dict:
        """The parameters of the authorization response sent back to ``app``."""
        assert is_redirect(response), (response.status_code, heading(response),
                                       alerts(response))
        location = response.headers["Location"]
        assert location.startswith(app.redirect_uri + "?"), location
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert params.get("state") == self.state and params.get("iss") == self.idp.issuer, params
        return params

    def sign_out(self, instance: Instance) -> None:
        """Sign Out on the IdP's own page."""
        page = self.get(instance, "/logout")
        assert heading(page) == "Sign Out", heading(page)
        response = self.submit(instance, page, {"confirm": "1"})
        assert heading(response) == "You are signed out", heading(response)


# --- what the application does with the answer --------------------------------------------


def token_request(instance: Instance, app: App, data: dict) -> requests.Response:
    return requests.post(instance.url + "/token", data=data, auth=(app.client_id, app.secret),
                         timeout=HTTP_TIMEOUT)


def redeem(browser: Browser, instance: Instance, app: App, code: str) -> requests.Response:
    return token_request(instance, app, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": browser.verifier})


def refresh(instance: Instance, app: App, refresh_token: str) -> requests.Response:
    return token_request(instance, app, {"grant_type": "refresh_token",
                                         "refresh_token": refresh_token})


def userinfo(instance: Instance, access_token: str) -> requests.Response:
    return requests.get(instance.url + "/userinfo", timeout=HTTP_TIMEOUT,
                        headers={"Authorization": "Bearer " + access_token})


def published_keys(instance: Instance) -> requests.Response:
    response = requests.get(instance.url + "/jwks.json", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return response


def id_token(browser: Browser, instance: Instance, app: App, tokens: dict,
             keys: dict | None = None):
    """The ID token, verified with ``instance``'s published keys (or ``keys`` it
    published)."""
    keyset = KeySet.import_key_set(keys or published_keys(instance).json())
    token = jwt.decode(tokens["id_token"], keyset, algorithms=["RS256"])
    claims = token.claims
    assert claims["iss"] == browser.idp.issuer and claims["aud"] == app.client_id, claims
    assert claims["nonce"] == browser.nonce, claims
    assert claims["exp"] > time.time(), claims
    return token


def sign_in_with_password(browser: Browser, instance: Instance, app: App,
                          account: Account, **params: str) -> dict:
    """A password-only sign-in (an older account says Not Now to MFA) on ``instance``;
    returns the token response from ``instance``."""
    page = browser.start(instance, app, account, **params)
    callback = browser.finish(instance, browser.not_now(instance, page), app)
    response = redeem(browser, instance, app, callback["code"])
    assert response.status_code == 200, response.text
    return response.json()


def enroll_by_sms(browser: Browser, instance: Instance, app: App, account: Account) -> None:
    """A new account's first sign-in: mandatory enrollment by SMS, on ``instance``."""
    continue_path = enroll_until_recovery_codes(browser, instance, app, account)
    browser.finish(instance, browser.get(instance, continue_path), app)


def enroll_until_recovery_codes(browser: Browser, instance: Instance, app: App,
                                account: Account) -> str:
    """A new account's first sign-in up to its recovery codes, enrolling by SMS on
    ``instance``; returns the path of the page's Continue link."""
    page = browser.submit(instance, browser.start(instance, app, account), button="enroll")
    assert heading(page) == "Verify Your Email", heading(page)
    page = browser.submit(instance, page, {"c-choice": "yes", "c-submit": "Continue"},
                          prefix="c-")
    assert heading(browser.open(browser.idp.email_link(account))) == (
        "Thank you for verifying your email")
    page = browser.submit(instance, page, {"k-submit": "Continue"}, prefix="k-")
    assert heading(page) == "Choose Your MFA Method", heading(page)
    page = browser.submit(instance, page, {"method": "sms", "submit": "Continue"})
    assert heading(page) == "Verify Your Phone Number", heading(page)
    page = browser.submit(instance, page, {"phone": account.phone, "submit": "Send Passcode"})
    page = browser.submit(instance, page, {"passcode": browser.idp.sms_passcode(account, 1),
                                           "submit": "Submit"})
    assert heading(page) == "Save Your Recovery Codes", heading(page)
    resume = re.search(r'<a class="button primary" href="([^"]+)">Continue</a>', page.text)
    return resume.group(1).replace("&amp;", "&")


# --- the tests --------------------------------------------------------------------------------


def test_a_sign_in_started_on_one_instance_finishes_on_the_other(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.enrolled_account()
    browser = Browser(idp)

    page = browser.start(a, app, account)  # the password on A, which sends the passcode
    assert heading(page) == CHALLENGE
    code = idp.sms_passcode(account, 2)
    response = browser.pass_challenge(b, page, code)  # the passcode on B
    callback = browser.finish(b, response, app)
    tokens = redeem(browser, a, app, callback["code"])  # the token on A

    assert tokens.status_code == 200, tokens.text
    claims = id_token(browser, b, app, tokens.json()).claims
    assert claims["sub"] == account.sub
    assert claims["acr"] == ACR_MFA
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    info = userinfo(b, tokens.json()["access_token"])
    assert info.status_code == 200 and info.json()["sub"] == account.sub, info.text


def test_single_sign_on_made_on_one_instance_holds_on_the_other(deployment):
    idp = deployment
    a, b = idp.a, idp.b
    one, two = idp.clients["rp-one"], idp.clients["rp-two"]
    browser = Browser(idp)
    first = id_token(browser, a, one,
                     sign_in_with_password(browser, a, one, idp.shared_account)).claims

    # Another application, opened in several tabs at once, served by both instances: each
    # tab is back at once with a code, without a page.
    tabs = [browser.copy() for _ in range(TABS)]
    arrivals = all_at_once(lambda i: tabs[i].authorize((b, a)[i % 2], two), TABS)
    for i, arrival in enumerate(arrivals):
        callback = tabs[i].callback(arrival, two)
        tokens = redeem(tabs[i], (a, b)[i % 2], two, callback["code"])
        assert tokens.status_code == 200, tokens.text
        claims = id_token(tabs[i], b, two, tokens.json()).claims
        assert claims["sub"] == first["sub"] == idp.shared_account.sub
        assert claims["sid"] == first["sid"]
        assert claims["auth_time"] == first["auth_time"]
        assert claims["acr"] == ACR_PWD


def test_signing_out_on_one_instance_ends_the_session_on_both(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.shared_account
    browser = Browser(idp)
    tokens = sign_in_with_password(browser, a, app, account)
    sid = id_token(browser, a, app, tokens).claims["sid"]
    assert "code" in browser.callback(browser.authorize(a, app, prompt="none"), app)

    state = secrets.token_urlsafe(8)
    response = browser.get(b, "/logout?" + urlencode({
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": app.post_logout_uri,
        "state": state}))
    assert is_redirect(response), (response.status_code, heading(response))
    assert response.headers["Location"] == f"{app.post_logout_uri}?state={state}"

    for instance in (a, b):
        answer = browser.callback(browser.authorize(instance, app, prompt="none"), app)
        assert answer.get("error") == "login_required", (instance, answer)
    page = browser.authorize(a, app)
    assert heading(page) == "Sign In"
    logout_tokens = idp.logout_tokens(app, sid)
    assert len(logout_tokens) == 1, logout_tokens
    assert logout_tokens[0]["sub"] == account.sub
    assert BACKCHANNEL_EVENT in logout_tokens[0]["events"]


def test_a_device_remembered_on_one_instance_skips_the_passcode_on_the_other(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.enrolled_account()
    browser = Browser(idp)
    page = browser.start(a, app, account)
    browser.finish(a, browser.pass_challenge(a, page, idp.sms_passcode(account, 2),
                                             remember=True), app)
    browser.sign_out(a)

    # B knows the device A remembered: the password alone, and no text message.
    response = browser.start(b, app, account)
    callback = browser.callback(response, app)
    tokens = redeem(browser, b, app, callback["code"])
    assert tokens.status_code == 200, tokens.text
    claims = id_token(browser, a, app, tokens.json()).claims
    assert claims["acr"] == ACR_MFA
    assert "rdev" in claims["amr"] and "sms" not in claims["amr"], claims["amr"]
    assert len(idp.texts_to(account)) == 2

    # Forgotten on B, it is forgotten on A.
    devices = browser.get(b, "/mfa/devices")
    assert heading(devices) == "Remembered Devices" and "Forget this device" in devices.text
    forgotten = browser.submit(b, devices, button="forget_all",
                               index=len(forms(devices.text)) - 1)
    assert "1 device forgotten." in forgotten.text
    browser.sign_out(b)
    page = browser.start(a, app, account)
    assert heading(page) == CHALLENGE
    assert len(idp.texts_to(account)) == 3


def test_password_attempts_on_both_instances_count_against_one_limit(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.older_account()
    browser = Browser(idp)
    page = browser.authorize(a, app)

    # Wrong passwords typed at once in several tabs, served by both instances: exactly as
    # many as the limit allows are checked.
    tabs = [browser.copy() for _ in range(TABS)]
    answers = all_at_once(lambda i: tabs[i].log_in((a, b)[i % 2], page, account,
                                                   password="wrong password"), TABS)
    checked = [r for r in answers if r.status_code == 400]
    refused = [r for r in answers if r.status_code == 429]
    assert (len(checked), len(refused)) == (LOGIN_LIMIT, TABS - LOGIN_LIMIT), [
        r.status_code for r in answers]
    assert all("user name or password you entered is incorrect" in alerts(r) for r in checked)
    assert all("Too many sign-in attempts" in alerts(r) for r in refused)

    # Then neither instance checks even the right password.
    for instance in (a, b):
        answer = browser.log_in(instance, page, account)
        assert answer.status_code == 429, (instance, answer.status_code, alerts(answer))
        assert "Too many sign-in attempts" in alerts(answer)
    assert idp.audit_count(account, "login_succeeded") == 0
    assert idp.audit_count(account, "login_failed") == LOGIN_LIMIT


def test_passcodes_sent_by_both_instances_count_against_one_account_limit(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.enrolled_account()  # the enrollment sent the first passcode
    browser = Browser(idp)
    page = browser.start(a, app, account)  # the second
    assert heading(page) == CHALLENGE
    idp.sms_passcode(account, 2)

    for sent in range(3, SEND_LIMIT + 1):
        page = browser.resend((a, b)[sent % 2], page)
        assert "We sent a new passcode" in page.text, (sent, alerts(page))
        idp.sms_passcode(account, sent)

    for instance in (a, b):
        page = browser.resend(instance, page)
        assert "Too many codes were sent for your account" in alerts(page), (instance, alerts(page))
    assert len(idp.texts_to(account)) == SEND_LIMIT
    # The last code sent still works, on either instance.
    callback = browser.finish(b, browser.pass_challenge(b, page, idp.sms_passcode(
        account, SEND_LIMIT)), app)
    assert redeem(browser, a, app, callback["code"]).status_code == 200


def test_wrong_passcodes_on_both_instances_count_against_one_code_and_one_account(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.enrolled_account()
    browser = Browser(idp)
    page = browser.start(a, app, account)
    code = idp.sms_passcode(account, 2)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    # Tries on one code: the last allowed wrong try, wherever it lands, uses the code up.
    for attempt in range(1, MAX_ATTEMPTS + 1):
        page = browser.pass_challenge((a, b)[attempt % 2], page, wrong)
        expected = ("Too many wrong tries for this passcode" if attempt == MAX_ATTEMPTS
                    else "The passcode you entered is not correct")
        assert expected in alerts(page), (attempt, alerts(page))
    page = browser.pass_challenge(b, page, code)
    assert "Too many wrong tries for this passcode" in alerts(page), alerts(page)

    # Failures of the account: the cool-down starts wherever the last one lands.
    page = browser.resend(a, page)
    new_code = idp.sms_passcode(account, 3)
    new_wrong = f"{(int(new_code) + 1) % 1_000_000:06d}"
    failures = MAX_ATTEMPTS + 1
    while failures < MAX_FAILURES:
        failures += 1
        page = browser.pass_challenge((a, b)[failures % 2], page, new_wrong)
    assert "Too many failed attempts" in alerts(page), alerts(page)
    for instance in (a, b):
        page = browser.pass_challenge(instance, page, new_code)
        assert heading(page) == CHALLENGE
        assert "Too many failed attempts" in alerts(page), (instance, alerts(page))
    assert idp.audit_count(account, "mfa_locked") == 1
    assert idp.audit_count(account, "mfa_challenge_passed") == 0


def test_an_authorization_code_replayed_on_the_other_instance_is_refused_and_revokes_its_tokens(
        deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    browser = Browser(idp)
    page = browser.start(a, app, idp.shared_account)
    callback = browser.finish(a, browser.not_now(a, page), app)
    first = redeem(browser, a, app, callback["code"])
    assert first.status_code == 200, first.text
    access_token = first.json()["access_token"]
    assert userinfo(b, access_token).status_code == 200

    replay = redeem(browser, b, app, callback["code"])
    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_grant"
    for instance in (a, b):
        assert userinfo(instance, access_token).status_code == 401, instance

    # A code sent at once to both instances: one exchange, and its tokens revoked too.
    callback = browser.callback(browser.authorize(b, app), app)
    answers = all_at_once(lambda i: redeem(browser, (a, b)[i % 2], app, callback["code"]),
                          TABS)
    issued = [r for r in answers if r.status_code == 200]
    assert len(issued) == 1, [r.status_code for r in answers]
    assert all(r.status_code == 400 and r.json()["error"] == "invalid_grant"
               for r in answers if r is not issued[0]), [r.text for r in answers]
    for instance in (a, b):
        assert userinfo(instance, issued[0].json()["access_token"]).status_code == 401


def test_a_refresh_token_replayed_on_the_other_instance_is_refused_and_ends_the_grant(
        deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    browser = Browser(idp)
    tokens = sign_in_with_password(browser, a, app, idp.shared_account,
                                   scope="openid profile offline_access")
    first = tokens["refresh_token"]

    rotated = refresh(b, app, first)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first

    replay = refresh(a, app, first)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
    # Its reuse ended the whole grant: the token that replaced it, and its access token.
    later = refresh(b, app, second)
    assert later.status_code == 400 and later.json()["error"] == "invalid_grant", later.text
    assert userinfo(a, rotated.json()["access_token"]).status_code == 401

    # A refresh token sent at once to both instances: one rotation, then the grant ends.
    callback = browser.callback(browser.authorize(b, app, scope="openid profile offline_access"),
                                app)
    grant = redeem(browser, b, app, callback["code"])
    assert grant.status_code == 200, grant.text
    answers = all_at_once(lambda i: refresh((a, b)[i % 2], app, grant.json()["refresh_token"]),
                          TABS)
    rotations = [r for r in answers if r.status_code == 200]
    assert len(rotations) == 1, [r.status_code for r in answers]
    assert all(r.status_code == 400 and r.json()["error"] == "invalid_grant"
               for r in answers if r is not rotations[0]), [r.text for r in answers]
    assert refresh(a, app, rotations[0].json()["refresh_token"]).status_code == 400
    assert userinfo(b, rotations[0].json()["access_token"]).status_code == 401


def test_thirty_parallel_right_passcodes_over_both_instances_give_exactly_one_success(
        deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.enrolled_account()
    browser = Browser(idp)
    page = browser.start(a, app, account)
    assert heading(page) == CHALLENGE
    code = idp.sms_passcode(account, 2)
    csrf = forms(page.text)[0]["fields"]["csrf_token"]
    path = page_path(page)
    tabs = [browser.copy() for _ in range(PARALLEL)]

    def submit(i: int) -> requests.Response:
        return tabs[i].post((a, b)[i % 2], path, {"csrf_token": csrf, "passcode": code,
                                                  "remember": "y", "submit": "Submit"})

    responses = all_at_once(submit, PARALLEL)
    statuses = [r.status_code for r in responses]
    assert all(status in (200, 302, 400) for status in statuses), f"{statuses}\n{idp.logs()}"
    # The one that passed remembers the device and finishes the sign-in: straight back to
    # the app with a code.
    winners = [i for i, r in enumerate(responses) if "idp_device" in r.cookies]
    assert len(winners) == 1, statuses
    winner = winners[0]
    assert responses[winner].status_code == 302
    assert idp.audit_count(account, "mfa_challenge_passed") == 1
    assert idp.audit_count(account, "device_remembered") == 1
    # The others were told the code is no longer valid, that the sign-in was finished
    # already, or (once the session had moved on to the winner's) sent back into the
    # sign-in, which cannot finish again.
    for i, response in enumerate(responses):
        if i != winner and response.status_code == 200:
            assert heading(response) == CHALLENGE
            assert "This passcode has expired or was replaced" in alerts(response), alerts(
                response)
        if response.status_code == 400:
            assert heading(response) == "Sign-in already finished", heading(response)
    # Losing a race is not a wrong guess: no failure counted, no cool-down.
    assert idp.query("SELECT m.failures, m.locked_until FROM mfa_accounts m JOIN users u "
                     "ON u.id = m.user_id WHERE u.username = %s", account.username) == [
        (0, None)]

    # Every other tab, now holding the winner's cookies, follows its redirect on the other
    # instance: none finishes the sign-in a second time.
    redirected = [i for i, r in enumerate(responses) if r.status_code == 302 and i != winner]
    followers = [tabs[winner].copy() for _ in redirected]

    def follow(n: int) -> requests.Response:
        i = redirected[n]
        return followers[n].go((b, a)[i % 2], responses[i])

    for arrival in all_at_once(follow, len(redirected)) if redirected else []:
        assert (arrival.status_code, heading(arrival)) == (400, "Sign-in already finished")
    callback = tabs[winner].callback(
        tabs[winner].go((a, b)[winner % 2], responses[winner]), app)
    tokens = redeem(browser, a, app, callback["code"])
    assert tokens.status_code == 200, tokens.text
    claims = id_token(browser, b, app, tokens.json()).claims
    assert claims["sub"] == account.sub
    assert set(claims["amr"]) == {"pwd", "sms", "otp", "mfa"}
    assert idp.audit_count(account, "authorization_granted") == 2  # enrollment, and this


def test_thirty_tabs_continuing_one_sign_in_over_both_instances_finish_it_once(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    account = idp.new_account(AFTER_CUTOFF)
    browser = Browser(idp)
    continue_path = enroll_until_recovery_codes(browser, a, app, account)
    tabs = [browser.copy() for _ in range(PARALLEL)]

    def press_continue(i: int) -> requests.Response:
        return tabs[i].go((a, b)[i % 2], tabs[i].get((a, b)[i % 2], continue_path))

    arrivals = all_at_once(press_continue, PARALLEL)
    back = [n for n, r in enumerate(arrivals) if is_redirect(r)]
    assert len(back) == 1, [(r.status_code, heading(r)) for r in arrivals]
    for n, arrival in enumerate(arrivals):
        if n != back[0]:
            assert (arrival.status_code, heading(arrival)) == (400, "Sign-in already finished")
    callback = tabs[back[0]].callback(arrivals[back[0]], app)
    tokens = redeem(browser, b, app, callback["code"])
    assert tokens.status_code == 200, tokens.text
    assert id_token(browser, a, app, tokens.json()).claims["sub"] == account.sub
    assert idp.audit_count(account, "authorization_granted") == 1


def all_at_once(work, count: int) -> list:
    """``work(i)`` for i in range(count), in as many threads released together; every
    wait is bounded."""
    barrier = threading.Barrier(count, timeout=PARALLEL_TIMEOUT)

    def run(i: int):
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
        return [future.result(timeout=PARALLEL_TIMEOUT) for future in futures]


def test_a_signing_key_rotated_through_one_instance_is_published_by_both(deployment):
    idp = deployment
    a, b, app = idp.a, idp.b, idp.clients["rp-one"]
    before = {k["kid"] for k in published_keys(a).json()["keys"]}
    assert {k["kid"] for k in published_keys(b).json()["keys"]} == before

    output = idp.cli("keys", "rotate")  # with instance A's settings
    rotated = time.monotonic()
    new_kid = re.search(r"New signing key (\S+)\.", output).group(1)
    assert new_kid not in before

    # Every worker may serve the key set from its copy for IDP_JWKS_CACHE_SECONDS: within
    # that time both instances publish the new key, beside the old ones.
    deadline = rotated + JWKS_CACHE_SECONDS + SLACK
    for instance in (a, b):
        published = {k["kid"] for k in keys_with(instance, new_kid, deadline)["keys"]}
        assert published >= before | {new_kid}, (instance, published)

    # B signs with it (single sign-on gives new tokens without the password, should B still
    # sign with the old key a while), and A's key set verifies what B signed.
    browser = Browser(idp)
    tokens = sign_in_with_password(browser, b, app, idp.shared_account)
    while kid_of(tokens["id_token"]) != new_kid:
        assert time.monotonic() < deadline, f"{b} still signs with {kid_of(tokens['id_token'])}"
        time.sleep(0.2)
        callback = browser.callback(browser.authorize(b, app), app)
        response = redeem(browser, b, app, callback["code"])
        assert response.status_code == 200, response.text
        tokens = response.json()
    token = id_token(browser, a, app, tokens, keys=keys_with(a, new_kid, deadline))
    assert token.claims["sub"] == idp.shared_account.sub

    # Once that time has passed, no worker of either instance answers without it.
    time.sleep(max(0.0, rotated + JWKS_CACHE_SECONDS - time.monotonic()))
    for instance in (a, b, a, b, a, b, a, b):
        published = {k["kid"] for k in published_keys(instance).json()["keys"]}
        assert published >= before | {new_kid}, (instance, published)


def kid_of(token: str) -> str:
    return jws.extract_compact(token.encode()).headers()["kid"]


def keys_with(instance: Instance, kid: str, deadline: float) -> dict:
    """The key set ``instance`` publishes, once ``kid`` is in it (waits until ``deadline``:
    every worker may answer from a cache of its own)."""
    while True:
        keys = published_keys(instance).json()
        if kid in {k["kid"] for k in keys["keys"]}:
            return keys
        assert time.monotonic() < deadline, f"{instance} does not publish {kid}"
        time.sleep(0.2)
