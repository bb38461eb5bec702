"""The world of the browser tests: the IdP under gunicorn on loopback (set up through its own
command line), a real SMTP server and an SMS webhook receiver, relying parties (played by the
test itself, or the demo apps of ``examples/relying_party``), and people at a real Chromium
whose every page is screenshotted and checked with axe-core.

- :class:`IdpServer`: ``idp db upgrade``, clients and users created with the ``idp`` command,
  gunicorn started and always stopped; where the passcodes and links arrive.
- :class:`DemoApps`: the three demo applications, registered with ``idp clients create`` and
  started as ``python -m examples.relying_party CLIENT_ID``.
- :class:`RelyingParty`: builds authorization requests (PKCE, state, nonce), exchanges the code
  at the token endpoint and returns the verified ID token's claims. Its redirect URIs point to
  a local page that only says the browser is back.
- :class:`Person`: one browser context with one tab; acts by the labels people see
  (``fill("User Name", ...)``, ``press("Log In")``) and, on every page of the IdP or a demo
  app it arrives at, checks one ``h1``, reflow at 320 px, no request leaving the machine, no
  Content-Security-Policy violation (the policy is enforced), and axe-core's serious and
  critical rules, and saves
  ``test-artifacts/screenshots/<test>/NN-<heading>.png``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import BrowserContext, Page

from tests.http_receivers import WebhookReceiver
from tests.processes import stop_process
from tests.smtp_server import SmtpServer, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AXE_SCRIPT = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("IDP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

PASSWORD = "Browser-Test-Password-1"
WEBHOOK_SECRET = "browser-test-webhook-secret"
BEFORE_CUTOFF = "2024-05-01"
AFTER_CUTOFF = "2025-06-01"
ACR_PWD = "urn:idp:acr:pwd"
ACR_MFA = "urn:idp:acr:mfa"
CHALLENGE = "Multifactor Authentication (MFA)"

# Bounded waits (seconds, or milliseconds for Playwright).
SERVER_START_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
MESSAGE_TIMEOUT = 10.0
PAGE_TIMEOUT_MS = 15_000
HTTP_TIMEOUT = 10.0

# axe-core impacts that fail a page.
BLOCKING_IMPACTS = ("serious", "critical")
# How far the page is wider than the viewport, and the innermost elements sticking out.
WIDER_THAN_VIEWPORT = """() => {
  const root = document.documentElement, width = root.clientWidth;
  const out = [...document.body.querySelectorAll("*")]
    .filter(e => e.getBoundingClientRect().right > width + 0.5)
    .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > width + 0.5))
    .map(e => e.tagName.toLowerCase() + (e.className ? "." + e.className : "") + " "
              + JSON.stringify((e.textContent || "").trim().slice(0, 40)));
  return [root.scrollWidth - width, out.slice(0, 5)];
}"""
FOCUSED_NAME = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return "";
  const label = e.labels && e.labels.length ? e.labels[0].textContent : null;
  return (e.getAttribute("aria-label") || label || e.value || e.textContent || "").trim();
}"""
NARROW_VIEWPORT = {"width": 320, "height": 720}
WIDE_VIEWPORT = {"width": 1024, "height": 768}


# --- the identity provider ----------------------------------------------------------------


@dataclass
class Account:
    username: str
    email: str
    sub: str
    password: str = PASSWORD


@dataclass
class ClientApp:
    """A client registered with ``idp clients create``."""

    client_id: str
    secret: str
    name: str
    redirect_uri: str
    help_contact: str


class IdpServer:
    """The IdP under gunicorn on a free loopback port, with the MFA plugin, email through
    ``mail`` and text messages through the webhook backend to ``sms``."""

    def __init__(self, directory: Path, mail: SmtpServer, sms: WebhookReceiver,
                 apps: WebhookReceiver):
        self.directory, self.mail, self.sms, self.apps = directory, mail, sms, apps
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "gunicorn.log"
        self.process: subprocess.Popen | None = None
        self.clients: dict[str, ClientApp] = {}
        # Sites whose pages the tests check on arrival: the IdP and the demo applications.
        self.checked_origins: set[str] = {self.url}
        self._phones = iter(range(100))
        # Secrets this server handed out or was given, for the scan of its log at the end.
        self.secrets_seen: dict[str, str] = {PASSWORD: "password"}
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
        env.update({k: str(v) for k, v in mail.settings().items()})
        env.update({
            "IDP_ENV": "development",
            "IDP_ISSUER": self.url,
            "IDP_INSTANCE_PATH": str(directory / "instance"),
            "IDP_DATABASE_URL": "sqlite:///" + str(directory / "idp.db"),
            "IDP_SECRET_KEY": secrets.token_urlsafe(48),
            "IDP_PLUGINS": "plugins.mfa",
            "IDP_BRAND_NAME": "Postal account",
            "IDP_SUPPORT_CONTACT": "the Postal help desk",
            "IDP_SMS_BACKEND": "webhook",
            "IDP_SMS_WEBHOOK_URL": sms.url + "/sms",
            "IDP_SMS_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "IDP_SMS_TIMEOUT": "5",
            # People in these tests are quicker than the resend interval allows.
            "IDP_PASSCODE_RESEND_SECONDS": "0",
            "IDP_LOG_LEVEL": "WARNING",
        })
        self.env = env

    # -- the command line ---------------------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None):
        """Run ``idp ARGS``; returns its JSON output (or text)."""
        done = subprocess.run([str(BIN / "idp"), *args], cwd=ROOT, env=self.env, input=stdin,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
        assert done.returncode == 0, f"idp {' '.join(args)} failed:\n{done.stderr}{done.stdout}"
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            return done.stdout

    def register_client(self, client_id: str, name: str, description: str, help_contact: str,
                        *options: str, scope: str = "openid profile email") -> ClientApp:
        redirect_uri = f"{self.apps.url}/{client_id}/callback"
        data = self.cli("clients", "create", "--client-id", client_id, "--name", name,
                        "--display-name", name, "--description", description,
                        "--redirect-uri", redirect_uri,
                        "--post-logout-redirect-uri", f"{self.apps.url}/{client_id}/",
                        "--help-contact", help_contact, "--scope", scope,
                        *options)
        app = ClientApp(client_id, data["client_secret"], name, redirect_uri, help_contact)
        self.clients[client_id] = app
        return app

    def new_account(self, created_at: str = AFTER_CUTOFF, prefix: str = "user") -> Account:
        """A fresh account (created after the MFA cutoff unless ``created_at`` says)."""
        username = f"{prefix}-{secrets.token_hex(4)}"
        email = f"{username}@mail.example"
        data = self.cli("users", "create", "--username", username, "--email", email,
                        "--created-at", created_at, "--password-stdin", stdin=PASSWORD + "\n")
        return Account(username, email, data["sub"])

    def new_phone(self) -> str:
        """A US mobile number no other test of this server uses (the SMS limits count per
        number)."""
        number = f"(202) 555-01{next(self._phones):02d}"
        self.secrets_seen[to_e164(number)] = "phone number"
        return number

    def log_leaks(self) -> list[str]:
        """Lines of the server's log that hold a secret it handed out or was given."""
        from tests.log_audit import scan_file

        return scan_file(self.log_path, self.secrets_seen)

    # -- the server ---------------------------------------------------------------------

    def start(self) -> IdpServer:
        self.cli("db", "upgrade")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
             "--access-logfile", "-", "--access-logformat",
             '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss', "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_until_serving(self.url + "/.well-known/openid-configuration", "the IdP",
                               self.log_path)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    # -- where messages arrive --------------------------------------------------------------

    def emails_to(self, address: str) -> list:
        return [m for m in self.mail.messages if address in m.rcpt_tos]

    def wait_for_email(self, address: str, count: int) -> object:
        """The ``count``-th email to ``address`` (waits a bounded time for it)."""
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while len(self.emails_to(address)) < count:
            assert time.monotonic() < deadline, f"email {count} to {address} did not arrive"
            time.sleep(0.05)
        return self.emails_to(address)[count - 1]

    def email_link(self, address: str) -> str:
        """The verification link of the latest email to ``address`` that has one."""
        pattern = re.compile(re.escape(self.url) + r"/mfa/email-link\?token=\S+")
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while True:
            links = [pattern.search(m.text) for m in self.emails_to(address)]
            links = [link.group(0) for link in links if link]
            if links:
                self.secrets_seen[parse_qs(urlsplit(links[-1]).query)["token"][0]] = "link token"
                return links[-1]
            assert time.monotonic() < deadline, f"no verification link to {address} arrived"
            time.sleep(0.05)

    def account_link(self, address: str, path: str, count: int = 1) -> str:
        """The link to ``path`` (``/account/verify-email``, ``/account/reset-password``) in
        the ``count``-th email to ``address`` that has one (waits a bounded time for it)."""
        pattern = re.compile(re.escape(self.url + path) + r"\?token=\S+")
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while True:
            links = [pattern.search(m.text) for m in self.emails_to(address)]
            links = [link.group(0) for link in links if link]
            if len(links) >= count:
                self.secrets_seen[parse_qs(urlsplit(links[count - 1]).query)["token"][0]] = (
                    "link token")
                return links[count - 1]
            assert time.monotonic() < deadline, f"no link to {path} arrived for {address}"
            time.sleep(0.05)

    def email_passcode(self, address: str, count: int | None = None) -> str:
        """The passcode in the ``count``-th email to ``address`` (the latest when None)."""
        self.wait_for_email(address, count or 1)
        text = self.emails_to(address)[(count or 0) - 1].text
        match = re.search(r"\b(\d{6})\b", text)
        assert match, f"no passcode in:\n{text}"
        self.secrets_seen[match.group(1)] = "passcode"
        return match.group(1)

    def texts_to(self, e164: str) -> list[str]:
        bodies = []
        for request in list(self.sms.requests):
            message = request.json()
            if message["to"] == e164:
                bodies.append(message["body"])
        return bodies

    def sms_passcode(self, number: str, count: int | None = None) -> str:
        """The passcode of the ``count``-th text message to ``number`` (the latest when
        ``count`` is None)."""
        e164 = to_e164(number)
        deadline = time.monotonic() + MESSAGE_TIMEOUT
        while len(self.texts_to(e164)) < (count or 1):
            assert time.monotonic() < deadline, f"text {count or 1} to {e164} did not arrive"
            time.sleep(0.05)
        body = self.texts_to(e164)[(count or 0) - 1]
        match = re.search(r"\b(\d{6})\b", body)
        assert match, f"no passcode in {body!r}"
        self.secrets_seen[match.group(1)] = "passcode"
        return match.group(1)


def origin(url: str) -> str:
    return "{0.scheme}://{0.netloc}".format(urlsplit(url))


def to_e164(number: str) -> str:
    return "+1" + "".join(ch for ch in number if ch.isdigit())[-10:]


def last_four(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())[-4:]


# --- the demo applications (examples/relying_party) ---------------------------------------


class DemoApps:
    """The three demo applications, each ``python -m examples.relying_party CLIENT_ID`` on a
    free loopback port, registered at ``idp`` with the ``idp clients create`` command (their
    secrets in a ``demo_clients.json`` of their own, as ``idp demo seed`` writes it)."""

    APPS = {
        # client id: (name, description, IdP options)
        "click-n-ship": ("Click-N-Ship", "Print shipping labels and pay postage online.",
                         ["--mfa-policy", "cohort", "--terms-file"]),
        "informed-delivery": ("Informed Delivery", "Preview your incoming mail and packages.",
                              ["--mfa-policy", "cohort"]),
        "customer-onboarding-portal": ("Customer Onboarding Portal",
                                       "Set up your business account and its services.",
                                       ["--mfa-policy", "always", "--terms-file"]),
    }

    def __init__(self, idp: IdpServer, directory: Path):
        self.idp, self.directory = idp, directory
        self.urls: dict[str, str] = {}
        self.processes: list[subprocess.Popen] = []

    def start(self) -> DemoApps:
        registered = {}
        for client_id, (name, description, options) in self.APPS.items():
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            if options[-1] == "--terms-file":
                terms = self.directory / f"{client_id}-terms.txt"
                terms.write_text(f"{name} Terms and Conditions.\n\nUse it kindly.\n")
                options = [*options, str(terms)]
            data = self.idp.cli(
                "clients", "create", "--client-id", client_id, "--name", name,
                "--display-name", name, "--description", description,
                "--redirect-uri", base + "/callback",
                "--post-logout-redirect-uri", base + "/",
                "--backchannel-logout-uri", base + "/backchannel-logout", "--require-pkce",
                "--help-contact", f"{name} support: 1-800-555-0199", *options)
            registered[client_id] = {"client_secret": data["client_secret"], "port": port,
                                     "name": name}
            self.urls[client_id] = base
        (self.directory / "demo_clients.json").write_text(json.dumps(registered))
        env = dict(self.idp.env, PYTHONUNBUFFERED="1")
        for client_id in self.APPS:
            log = (self.directory / f"{client_id}.log").open("ab")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "examples.relying_party", client_id,
                 "--instance", str(self.directory), "--issuer", self.idp.url],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
            log.close()
        for client_id, url in self.urls.items():
            wait_until_serving(url + "/", f"the demo app {client_id}",
                               self.directory / f"{client_id}.log")
            self.idp.checked_origins.add(url)
        return self

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


def wait_until_serving(url: str, what: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{what} did not start on {url}:\n{tail}")


# --- relying parties ----------------------------------------------------------------------

APP_PAGE = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Application'
            b"</title></head><body><main><h1>Back at the application</h1></main></body></html>")


def application_pages() -> WebhookReceiver:
    """Where the registered redirect URIs point: a page saying the browser is back."""
    return WebhookReceiver(body=APP_PAGE, headers={"Content-Type": "text/html; charset=utf-8"})



@dataclass
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    verifier: str


class RelyingParty:
    """An application signing its users in at the IdP; the test plays its part."""

    def __init__(self, idp: IdpServer, app: ClientApp):
        self.idp, self.app = idp, app
        self.tokens: dict = {}
        self.access_token = ""

    def authorization_request(self, **params: str) -> AuthorizationRequest:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": self.app.client_id,
            "redirect_uri": self.app.redirect_uri,
            "scope": "openid profile email",
            "state": secrets.token_urlsafe(12),
            "nonce": secrets.token_urlsafe(12),
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            **params,
        }
        return AuthorizationRequest(self.idp.url + "/authorize?" + urlencode(query),
                                    query["state"], query["nonce"], verifier)

    def id_token_claims(self, request: AuthorizationRequest, callback_url: str) -> dict:
        """Check the callback, exchange its code and return the verified ID token's claims."""
        params = {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}
        return self.claims_from_response(request, params)

    def claims_from_response(self, request: AuthorizationRequest, params: dict) -> dict:
        """Check the authorization response's ``params`` (from the query string or a posted
        form), exchange its code and return the verified ID token's claims."""
        assert "error" not in params, params
        assert params.get("state") == request.state, params
        assert params.get("iss") == self.idp.url, params
        response = requests.post(
            self.idp.url + "/token", timeout=HTTP_TIMEOUT,
            auth=(self.app.client_id, self.app.secret),
            data={"grant_type": "authorization_code", "code": params["code"],
                  "redirect_uri": self.app.redirect_uri, "code_verifier": request.verifier},
        )
        assert response.status_code == 200, response.text
        self.tokens = response.json()
        for name in ("access_token", "refresh_token", "id_token"):
            if self.tokens.get(name):
                self.idp.secrets_seen[self.tokens[name]] = name.replace("_", " ")
        self.idp.secrets_seen[params["code"]] = "code"
        self.idp.secrets_seen[self.app.secret] = "client secret"
        self.access_token = self.tokens["access_token"]
        keyset = KeySet.import_key_set(
            requests.get(self.idp.url + "/jwks.json", timeout=HTTP_TIMEOUT).json())
        claims = jwt.decode(response.json()["id_token"], keyset).claims
        assert claims["iss"] == self.idp.url and claims["aud"] == self.app.client_id, claims
        assert claims["nonce"] == request.nonce, claims
        return claims

    def userinfo(self) -> dict:
        """The UserInfo of the last sign-in."""
        response = requests.get(self.idp.url + "/userinfo", timeout=HTTP_TIMEOUT,
                                headers={"Authorization": "Bearer " + self.access_token})
        assert response.status_code == 200, response.text
        return response.json()


# --- people at the browser ----------------------------------------------------------------


@functools.cache
def axe_source() -> str:
    """axe-core as installed from the npm registry by ``tests/browser/setup.sh``."""
    return AXE_SCRIPT.read_text(encoding="utf-8")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "page"


@dataclass
class Journey:
    """What a test saw: screenshots numbered in the order the pages were reached."""

    name: str
    directory: Path = field(init=False)
    count: int = 0
    pages: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.directory = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)
        if self.directory.exists():
            for old in self.directory.glob("*.png"):
                old.unlink()

    def next_path(self, heading: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.count += 1
        self.pages.append(heading)
        return self.directory / f"{self.count:02d}-{slug(heading)}.png"


class Person:
    """Someone at a browser (one context, one tab) signing in at the IdP.

    Every page the tab arrives at is checked by :meth:`arrived`. Navigations not made through
    this class's methods are counted too, and :meth:`unchecked_pages` reports them.
    """

    def __init__(self, idp: IdpServer, context: BrowserContext, journey: Journey, label: str,
                 javascript: bool = True):
        self.idp, self.context, self.journey, self.label = idp, context, journey, label
        self.javascript = javascript
        self.foreign_requests: list[str] = []
        self.navigated = 0
        self.checked = 0
        context.on("request", self._watch_request)
        self.page: Page = context.new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.page.on("framenavigated", self._count_navigation)
        # The pages' Content-Security-Policy is enforced: what it blocked, as Chromium says.
        self.csp_violations: list[str] = []
        self.page.on("console", self._watch_console)

    # -- plumbing -------------------------------------------------------------------------

    def _watch_request(self, request) -> None:
        if origin(request.url) not in self.idp.checked_origins | {self.idp.apps.url}:
            self.foreign_requests.append(request.url)

    def _watch_console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def _count_navigation(self, frame) -> None:
        if frame == self.page.main_frame and origin(frame.url) in self.idp.checked_origins:
            self.navigated += 1

    def unchecked_pages(self) -> int:
        return self.navigated - self.checked

    def passed_through(self, pages: int = 1) -> None:
        """Count ``pages`` that left by themselves as soon as they loaded (the form_post page
        submits itself): they cannot be checked in this tab. A browser without JavaScript
        stays on them, and a test checks them there."""
        self.checked += pages

    @property
    def at_idp(self) -> bool:
        return self.page.url.startswith(self.idp.url)

    # -- arriving at a page ---------------------------------------------------------------

    def arrived(self) -> None:
        """Check the page the tab is on: heading, reflow, assets, accessibility; screenshot."""
        self.page.wait_for_load_state("load")
        if origin(self.page.url) not in self.idp.checked_origins:
            return  # the stand-in for an application's redirect URI
        self.checked += 1
        headings = self.page.locator("h1")
        assert headings.count() == 1, f"{self.page.url}: {headings.count()} h1 elements"
        heading = " ".join(headings.inner_text().split())
        assert heading, f"{self.page.url}: empty h1"
        self.page.screenshot(path=str(self.journey.next_path(heading)), full_page=True)
        self._check_reflow(heading)
        assert not self.foreign_requests, f"requests left the IdP: {self.foreign_requests}"
        assert not self.csp_violations, f"Content-Security-Policy: {self.csp_violations}"
        violations = self.axe_violations()
        assert not violations, f"axe-core on {heading!r} ({self.page.url}):\n" + "\n".join(
            violations)

    def _check_reflow(self, heading: str) -> None:
        """Readable at 320 CSS pixels: nothing wider than the viewport."""
        self.page.set_viewport_size(NARROW_VIEWPORT)
        try:
            overflow, culprits = self.page.evaluate(WIDER_THAN_VIEWPORT)
        finally:
            self.page.set_viewport_size(WIDE_VIEWPORT)
        assert overflow <= 0, (f"{heading!r} scrolls sideways at 320 px ({overflow} px too wide):"
                               f" {culprits}")

    def axe_violations(self) -> list[str]:
        """axe-core's serious and critical violations on the current page, as text."""
        if not self.javascript:
            return self._twin_axe_violations()
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            # Evaluated by the browser's debugging protocol, so the page's
            # Content-Security-Policy (no script but the IdP's own) stays enforced.
            self.page.evaluate(axe_source())
        results = self.page.evaluate(
            "async () => { const r = await axe.run(document, {resultTypes: ['violations']});"
            " return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ') + ' ' + n.failureSummary)})); }")
        return [f"- [{v['impact']}] {v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"])
                for v in results if v["impact"] in BLOCKING_IMPACTS]

    def _twin_axe_violations(self) -> list[str]:
        """axe-core needs scripts: a browser without JavaScript has its page checked in a
        twin tab that runs them, served the same markup at the same address, without the
        handlers and scripts that would act on load (the form_post page submits itself)."""
        html = re.sub(r'\son(load|DOMContentLoaded)="[^"]*"', "", self.page.content())
        html = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.DOTALL | re.IGNORECASE)
        twin = self.context.browser.new_context(viewport=WIDE_VIEWPORT, locale="en-US",
                                                bypass_csp=True)
        try:
            checker = Person(self.idp, twin, self.journey, self.label + "-twin")
            checker.page.route(self.page.url, lambda route: route.fulfill(
                status=200, body=html, content_type="text/html; charset=utf-8"))
            checker.page.goto(self.page.url, wait_until="load")
            return checker.axe_violations()
        finally:
            twin.close()

    @contextmanager
    def navigation(self) -> Iterator[None]:
        """Wrap an action that loads a new page; the page is checked on arrival."""
        with self.page.expect_navigation(wait_until="load"):
            yield
        self.arrived()

    # -- what people do ---------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.page.goto(url, wait_until="load")
        self.arrived()

    def press(self, button: str) -> None:
        with self.navigation():
            self.page.get_by_role("button", name=button, exact=True).click()

    def follow(self, link: str) -> None:
        with self.navigation():
            self.page.get_by_role("link", name=link, exact=True).click()

    def fill(self, label: str, value: str) -> None:
        self.page.get_by_label(label, exact=True).fill(value)

    def choose(self, label: str) -> None:
        self.page.get_by_label(label, exact=True).check()

    def back(self) -> None:
        """The browser's Back button."""
        self.page.go_back(wait_until="load")
        self.arrived()

    # -- the keyboard -----------------------------------------------------------------------

    def keys(self, *keys: str) -> None:
        """Press keys one after another (``"Tab"``, ``"Enter"``, ``"Shift+Tab"``)."""
        for key in keys:
            self.page.keyboard.press(key)

    def focused(self) -> str:
        """The accessible name (label, value or text) of the focused element."""
        return self.page.evaluate(FOCUSED_NAME)

    def tab_to(self, name: str, limit: int = 20) -> int:
        """Press Tab until the element called ``name`` has the focus; returns the presses."""
        for presses in range(1, limit + 1):
            self.page.keyboard.press("Tab")
            if self.focused() == name:
                return presses
        raise AssertionError(f"Tab never reached {name!r} on {self.heading!r}")

    def focus_is_visible(self) -> bool:
        """Whether the focused element shows a focus outline (keyboard focus)."""
        return self.page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement);"
            " return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2; }")

    @property
    def heading(self) -> str:
        return " ".join(self.page.locator("h1").inner_text().split())

    def text(self) -> str:
        return self.page.locator("main").inner_text()

    def alert(self) -> str:
        return " ".join(self.page.get_by_role("alert").inner_text().split())

    def field_error(self, label: str) -> str:
        """The error shown next to the field, as its ``aria-describedby`` points to it."""
        field_ = self.page.get_by_label(label, exact=True)
        assert field_.get_attribute("aria-invalid") == "true", f"{label} is not marked invalid"
        described = field_.get_attribute("aria-describedby")
        assert described, f"{label} has no aria-describedby"
        return " ".join(self.page.locator(f"#{described}").inner_text().split())

    # -- sign-in steps ----------------------------------------------------------------------

    def start(self, rp: RelyingParty, **params: str) -> AuthorizationRequest:
        """Arrive from ``rp``: the browser follows its authorization request."""
        request = rp.authorization_request(**params)
        self.open(request.url)
        return request

    def log_in(self, account: Account) -> None:
        assert self.heading == "Sign In", self.heading
        self.fill("User Name", account.username)
        self.fill("Password", account.password)
        self.press("Log In")

    def submit_passcode(self, code: str) -> None:
        self.fill("Passcode", code)
        self.press("Submit")

    def back_at(self, rp: RelyingParty, request: AuthorizationRequest) -> dict:
        """The browser is back at ``rp``: its ID token's claims."""
        assert not self.at_idp, f"still at the IdP: {self.heading!r}"
        assert self.page.url.startswith(rp.app.redirect_uri + "?"), self.page.url
        return rp.id_token_claims(request, self.page.url)

    def sign_out(self) -> None:
        """Sign out at the IdP (its own Sign Out page, as a logout without a hint asks)."""
        self.open(self.idp.url + "/logout")
        assert self.heading == "Sign Out", self.heading
        self.press("Sign Out")
        assert self.heading == "You are signed out", self.heading

