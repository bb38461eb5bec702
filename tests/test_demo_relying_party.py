"""The demo relying parties (``examples/relying_party``) and the ``make run`` launcher,
against a real identity provider.

The identity provider runs under gunicorn on a free loopback port with the MFA plugin, seeded
with ``idp db upgrade`` and ``idp demo seed``; the demo clients' URIs are then pointed at free
ports where the relying-party app (Authlib's Flask client) is served by werkzeug in a thread.
A ``requests`` session plays the browser: it signs in as the older demo account, which
chooses **Not Now** at the MFA offer and accepts the terms where an app has them. Logout
tokens for the back-channel tests are signed with the identity provider's own key.

The launcher tests start ``python -m examples.run_demo`` (gunicorn and the three apps as
``make run`` does) on free ports and check through ``/proc`` that every process it started,
gunicorn's workers included, has exited after SIGINT, SIGTERM, a child's death, or the
launcher's own SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

from examples.relying_party import create_app
from tests.test_certified_client import free_port, stop, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HTTP_TIMEOUT = 10  # seconds for any single request
LAUNCH_TIMEOUT = 60  # seconds for the launcher to report everything up
EXIT_TIMEOUT = 30  # seconds for the launcher and its children to exit
USERNAME = "olduser"  # created before the MFA cutoff: may choose Not Now
DECLINER = "decliner"  # another older account, the only one to decline Click-N-Ship's terms
STEPPER = "stepper"  # another older account, the only one to enroll (by stepping up)
PASSWORD = "Demo-Password-1"
ACR_PWD = "urn:idp:acr:pwd"
ACR_MFA = "urn:idp:acr:mfa"
ACR_AAL2 = "http://idmanagement.gov/ns/assurance/aal/2"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


# --- the identity provider and the apps -------------------------------------------------------


SECRET_KEY = secrets.token_urlsafe(48)  # of every identity provider here (the keys' encryption)


def idp_environment(issuer: str, instance: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_ENV="development",
        IDP_ISSUER=issuer,
        IDP_INSTANCE_PATH=str(instance),
        IDP_SECRET_KEY=SECRET_KEY,
        IDP_PLUGINS="plugins.mfa",
        IDP_LOG_LEVEL="WARNING",
        IDP_BACKCHANNEL_TIMEOUT="5",
        IDP_DEV_OUTBOX="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def idp(env: dict, *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "idp"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, f"idp {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


class Admin:
    """The identity provider's command line and signing key, in this process, on the
    database of a server's environment."""

    def __init__(self, env: dict):
        from idp import create_app as create_idp

        self.app = create_idp({
            "INSTANCE_PATH": env["IDP_INSTANCE_PATH"], "IDP_ISSUER": env["IDP_ISSUER"],
            "IDP_SECRET_KEY": env["IDP_SECRET_KEY"], "IDP_PLUGINS": env["IDP_PLUGINS"],
        })

    def run(self, *args: str, input: str | None = None) -> str:
        result = self.app.test_cli_runner().invoke(args=list(args), input=input)
        assert result.exit_code == 0, f"idp {' '.join(args)}: {result.output}"
        return result.output

    def signing_key(self) -> RSAKey:
        from idp.oauth import keys

        with self.app.app_context():
            return keys.signing_jwk()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """An instance folder after ``idp db upgrade`` and ``idp demo seed``, to be copied."""
    instance = tmp_path_factory.mktemp("seeded") / "instance"
    env = idp_environment("http://127.0.0.1:5000", instance)
    idp(env, "db", "upgrade")
    idp(env, "demo", "seed")
    return instance


def copy_instance(seeded: Path, folder: Path) -> tuple[Path, dict]:
    """A copy of the seeded instance; the demo clients as the seed wrote them."""
    instance = folder / "instance"
    shutil.copytree(seeded, instance)
    return instance, json.loads((instance / "demo_clients.json").read_text())


class RunningApp:
    """A relying-party app served by werkzeug in a thread on a free port."""

    def __init__(self, client_id: str, name: str, secret: str, issuer: str, port: int,
                 require_mfa: bool = False):
        self.client_id, self.name = client_id, name
        self.url = f"http://127.0.0.1:{port}"
        self.secret_key = secrets.token_urlsafe(32)
        self.app = create_app({
            "NAME": name, "DESCRIPTION": f"{name}, the demo.", "CLIENT_ID": client_id,
            "CLIENT_SECRET": secret, "ISSUER": issuer, "BASE_URL": self.url,
            "REQUIRE_MFA": require_mfa, "SECRET_KEY": self.secret_key,
        })
        self.server = make_server("127.0.0.1", port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> RunningApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def session_of(self, browser: requests.Session) -> dict:
        """The app's session as stored in the browser's cookie (none: empty)."""
        cookie = browser.cookies.get(self.app.config["SESSION_COOKIE_NAME"])
        if not cookie:
            return {}
        serializer = self.app.session_interface.get_signing_serializer(self.app)
        return serializer.loads(cookie)


@pytest.fixture(scope="module")
def provider(tmp_path_factory, seeded):
    """The seeded identity provider under gunicorn, with the demo clients' URIs moved to
    free ports; stopped afterwards."""
    instance, clients = copy_instance(seeded, tmp_path_factory.mktemp("demo-rp"))
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = idp_environment(issuer, instance)
    admin = Admin(env)
    for username in (DECLINER, STEPPER):
        admin.run("users", "create", "--username", username, "--email",
                  f"{username}@example.com", "--created-at", "2024-05-01", "--password-stdin",
                  input=PASSWORD + "\n")
    ports = {}
    for client_id in clients:
        ports[client_id] = free_port()
        base = f"http://127.0.0.1:{ports[client_id]}"
        admin.run("clients", "update", client_id, "--redirect-uri", base + "/callback",
                  "--post-logout-redirect-uri", base + "/",
                  "--backchannel-logout-uri", base + "/backchannel-logout")
    log = instance.parent / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--timeout", "30", "wsgi:app"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(process, issuer + "/healthz", log)
        yield {"issuer": issuer, "clients": clients, "ports": ports, "admin": admin}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def apps(provider):
    """Informed Delivery and Click-N-Ship, served; stopped afterwards."""
    running = {}
    try:
        for client_id in ("informed-delivery", "click-n-ship"):
            info = provider["clients"][client_id]
            running[client_id] = RunningApp(
                client_id, info["name"], info["client_secret"], provider["issuer"],
                provider["ports"][client_id],
            ).start()
        yield running
    finally:
        for app in running.values():
            app.stop()


@pytest.fixture
def delivery(apps) -> RunningApp:
    return apps["informed-delivery"]


@pytest.fixture
def shipping(apps) -> RunningApp:
    return apps["click-n-ship"]


@pytest.fixture
def browser():
    with requests.Session() as session:
        yield session


# --- reading pages ------------------------------------------------------------------------------


VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                 "source", "track", "wbr"}


class Page(HTMLParser):
    """What a test needs of a page: h1s, forms (fields, submit buttons, labels), links,
    the ID-token table, texts by element id and role."""

    def __init__(self, response: requests.Response):
        super().__init__()
        self.url = response.url
        self.status = response.status_code
        self.h1: list[str] = []
        self.forms: list[dict] = []
        self.labels: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.rows: dict[str, str] = {}
        self.by_id: dict[str, str] = {}
        self.by_role: dict[str, str] = {}
        self._open: list[dict] = []  # elements whose text is being collected
        self._th: str | None = None
        self.feed(response.text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action") or "", "fields": {},
                               "submits": {}, "inputs": {}})
        elif tag == "input" and self.forms:
            form, name, kind = self.forms[-1], attrs.get("name"), attrs.get("type", "text")
            if kind == "submit":
                form["submits"][attrs.get("value", "")] = (name, attrs.get("value", ""))
            elif name and kind == "hidden":
                form["fields"][name] = attrs.get("value", "")
            elif name:
                form["inputs"][attrs.get("id")] = {
                    "name": name, "type": kind, "value": attrs.get("value", "on"),
                    "checked": "checked" in attrs,
                }
        watched = {
            "h1": tag == "h1", "label": tag == "label", "a": tag == "a" and "href" in attrs,
            "th": tag == "th", "td": tag == "td", "button": tag == "button",
        }
        if tag in VOID_ELEMENTS:
            return
        if any(watched.values()) or "id" in attrs or "role" in attrs:
            self._open.append({"tag": tag, "attrs": attrs, "text": []})

    def handle_data(self, data):
        for element in self._open:
            element["text"].append(data)

    def handle_endtag(self, tag):
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index]["tag"] == tag:
                element = self._open.pop(index)
                self._close(element)
                return

    def _close(self, element):
        text = " ".join("".join(element["text"]).split())
        tag, attrs = element["tag"], element["attrs"]
        if tag == "h1":
            self.h1.append(text)
        elif tag == "label" and attrs.get("for"):
            self.labels[text] = attrs["for"]
        elif tag == "a":
            self.links[text] = attrs["href"]
        elif tag == "th":
            self._th = text
        elif tag == "td" and self._th is not None:
            self.rows[self._th] = text
            self._th = None
        elif tag == "button" and self.forms:
            self.forms[-1]["submits"][text] = (attrs.get("name"), attrs.get("value", ""))
        if "id" in attrs:
            self.by_id[attrs["id"]] = text
        if "role" in attrs:
            self.by_role[attrs["role"]] = text

    def form_with(self, button: str) -> dict:
        for form in self.forms:
            if button in form["submits"]:
                return form
        raise AssertionError(f"no {button!r} button on {self.url} ({self.h1})")


def press(browser: requests.Session, page: Page, button: str,
          fields: dict[str, str] | None = None, choose: tuple[str, ...] = ()
          ) -> requests.Response:
    """Fill the fields (by label) of the form with ``button``, pick the radio buttons
    labelled ``choose``, and press the button, as a browser would."""
    form = page.form_with(button)
    data = dict(form["fields"])
    inputs = form["inputs"]
    for field in inputs.values():
        if field["type"] in ("radio", "checkbox") and field["checked"]:
            data[field["name"]] = field["value"]
    for label in choose:
        field = inputs[page.labels[label]]
        data[field["name"]] = field["value"]
    for label, value in (fields or {}).items():
        data[inputs[page.labels[label]]["name"]] = value
    name, value = form["submits"][button]
    if name:
        data[name] = value
    return browser.post(urljoin(page.url, form["action"]), data=data, timeout=HTTP_TIMEOUT)


def through_the_identity_provider(browser, response, issuer: str, username=USERNAME,
                                  terms: str = "I Agree") -> tuple[Page, list[str]]:
    """Answer the identity provider's pages until the browser is back at an app.

    Returns the app's page and the headings of the identity provider's pages on the way.
    """
    seen: list[str] = []
    for _ in range(12):
        page = Page(response)
        if not response.url.startswith(issuer + "/"):
            return page, seen
        assert response.status_code == 200, (response.url, response.text[:800])
        heading = page.h1[0] if page.h1 else ""
        seen.append(heading)
        if heading == "Sign In":
            response = press(browser, page, "Log In",
                             {"User Name": username, "Password": PASSWORD})
        elif "Not Now" in {s for f in page.forms for s in f["submits"]}:
            response = press(browser, page, "Not Now")
        elif heading == "Terms and Conditions":
            response = press(browser, page, terms)
        else:
            raise AssertionError(f"unexpected page {heading!r} at {response.url}")
    raise AssertionError(f"still at the identity provider after {seen}")


def sign_in(browser, app: RunningApp, issuer: str, username: str = USERNAME
            ) -> tuple[Page, list[str]]:
    """Press Sign in at the app and finish the sign-in; returns the app's page."""
    home = Page(browser.get(app.url + "/", timeout=HTTP_TIMEOUT))
    response = browser.get(urljoin(home.url, home.links["Sign in"]), timeout=HTTP_TIMEOUT)
    page, seen = through_the_identity_provider(browser, response, issuer, username=username)
    assert page.url == app.url + "/", (page.url, page.by_role)
    return page, seen


def signed_in_as(page: Page) -> str | None:
    text = page.by_id.get("signed-in-as", "")
    return text.removeprefix("Signed in as ") if text.startswith("Signed in as ") else None


def is_signed_out(page: Page) -> bool:
    return "Sign in" in page.links and "Sign out" not in page.links and not page.rows


# --- signing in ---------------------------------------------------------------------------------


def test_signed_out_home_page_shows_the_app_and_a_sign_in_link(browser, delivery):
    page = Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT))

    assert page.status == 200
    assert page.h1 == ["Informed Delivery"]
    assert page.links["Sign in"] == "/login"
    assert is_signed_out(page)


def test_sign_in_sends_a_code_flow_request_with_pkce_s256_nonce_and_state(
    browser, delivery, provider
):
    response = browser.get(delivery.url + "/login", allow_redirects=False, timeout=HTTP_TIMEOUT)

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(provider["issuer"] + "/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == "informed-delivery"
    assert query["redirect_uri"] == delivery.url + "/callback"
    assert set(query["scope"].split()) >= {"openid", "profile"}
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["nonce"] and query["state"]
    assert "acr_values" not in query  # Informed Delivery follows the account's cohort


def test_signing_in_through_the_app_shows_the_id_token_table(browser, delivery, provider):
    before = int(time.time())

    page, seen = sign_in(browser, delivery, provider["issuer"])

    assert seen[0] == "Sign In"
    assert page.h1 == ["Informed Delivery"]
    assert signed_in_as(page) == USERNAME
    assert list(page.rows) == ["sub", "auth_time", "acr", "amr"]
    stored = delivery.session_of(browser)
    assert page.rows["sub"] == stored["user"]["sub"] and len(page.rows["sub"]) > 8
    match = re.fullmatch(r"(\d+) \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\)", page.rows["auth_time"])
    assert match, page.rows["auth_time"]
    auth_time = int(match.group(1))
    assert before - 5 <= auth_time <= time.time() + 5
    assert match.group(2) == datetime.fromtimestamp(auth_time, UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert page.rows["acr"] == ACR_PWD  # the older account chose Not Now
    assert page.rows["amr"] == "pwd"
    assert "Step up" in page.links and page.links["Sign out"] == "/logout"


def test_the_app_keeps_only_the_claims_the_sid_and_the_id_token(browser, delivery, provider):
    sign_in(browser, delivery, provider["issuer"])

    stored = delivery.session_of(browser)

    assert set(stored) <= {"user", "id_token", "signed_in_at"}
    assert set(stored["user"]) == {"sub", "auth_time", "acr", "amr", "sid",
                                   "preferred_username"}
    assert stored["user"]["sid"]
    claims = jwt.decode(stored["id_token"], jwks_of(provider)).claims
    assert claims["sid"] == stored["user"]["sid"] and claims["aud"] in (
        "informed-delivery", ["informed-delivery"])


def test_a_second_app_signs_in_by_single_sign_on_without_the_password(
    browser, delivery, shipping, provider
):
    sign_in(browser, delivery, provider["issuer"])

    page, seen = sign_in(browser, shipping, provider["issuer"])

    assert "Sign In" not in seen  # no password asked
    assert set(seen) <= {"Terms and Conditions"}  # Click-N-Ship's terms, the first time
    assert page.h1 == ["Click-N-Ship"]
    assert signed_in_as(page) == USERNAME
    assert shipping.session_of(browser)["user"]["sid"] == delivery.session_of(browser)["user"][
        "sid"]


def test_step_up_asks_for_the_aal2_alias_without_prompt_none(browser, delivery, provider):
    sign_in(browser, delivery, provider["issuer"])
    page = Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT))

    response = browser.get(urljoin(page.url, page.links["Step up"]), allow_redirects=False,
                           timeout=HTTP_TIMEOUT)

    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["acr_values"] == [ACR_AAL2]
    assert "prompt" not in query
    assert query["code_challenge_method"] == ["S256"] and query["nonce"]


def outbox(provider, to: str) -> list[dict]:
    """The messages to ``to`` in the development outbox, newest first."""
    response = requests.get(provider["issuer"] + "/dev/outbox.json", params={"to": to},
                            timeout=HTTP_TIMEOUT)
    assert response.status_code == 200
    return response.json()


def test_step_up_enrolls_what_is_missing_and_shows_the_new_acr_and_amr(
    browser, delivery, provider
):
    """An older account signed in with its password steps up to AAL2: it enrolls a phone
    (the identity provider asks no password again) and the table shows the new claims."""
    phone, email = "(202) 555-0143", STEPPER + "@example.com"
    page, _ = sign_in(browser, delivery, provider["issuer"], username=STEPPER)
    assert page.rows["acr"] == ACR_PWD
    first = delivery.session_of(browser)

    response = browser.get(urljoin(page.url, page.links["Step up"]), timeout=HTTP_TIMEOUT)
    seen = []
    for _ in range(15):
        page = Page(response)
        if not response.url.startswith(provider["issuer"] + "/"):
            break
        heading = page.h1[0] if page.h1 else ""
        seen.append(heading)
        submits = {s for f in page.forms for s in f["submits"]}
        if "Enroll in MFA" in submits:
            response = press(browser, page, "Enroll in MFA")
        elif heading == "Verify Your Email" and "Yes" in page.labels:
            response = press(browser, page, "Continue", choose=("Yes",))
        elif heading == "Verify Your Email":  # the link was sent: open it, then Continue
            link = re.search(r"https?://\S+", outbox(provider, email)[0]["text"]).group(0)
            opened = Page(requests.get(link, timeout=HTTP_TIMEOUT))  # another device
            assert opened.h1 == ["Thank you for verifying your email"]
            response = press(browser, page, "Continue")
        elif heading == "Choose Your MFA Method":
            response = press(browser, page, "Continue", choose=("SMS",))
        elif heading == "Verify Your Phone Number":
            response = press(browser, page, "Send Passcode", {"Phone Number": phone})
        elif heading == "Multifactor Authentication (MFA)" and "Submit" in submits:
            text = outbox(provider, "+12025550143")[0]["text"]
            code = re.search(r"\b(\d{6})\b", text).group(1)
            response = press(browser, page, "Submit", {"Passcode": code})
        elif "Continue" in page.links:  # the recovery codes, shown once
            response = browser.get(urljoin(page.url, page.links["Continue"]),
                                   timeout=HTTP_TIMEOUT)
        else:
            raise AssertionError(f"unexpected page {heading!r} after {seen}")

    assert "Sign In" not in seen, seen  # the password is not asked again
    assert page.url == delivery.url + "/", (page.url, page.by_role, seen)
    assert page.by_role["status"] == "Step-up complete."
    assert signed_in_as(page) == STEPPER
    assert page.rows["acr"] == ACR_AAL2
    assert set(page.rows["amr"].split()) == {"pwd", "sms", "otp", "mfa"}
    stepped_up = delivery.session_of(browser)
    assert stepped_up["id_token"] != first["id_token"]  # a new ID token, the same session
    assert stepped_up["user"]["sid"] == first["user"]["sid"]
    assert stepped_up["user"]["sub"] == first["user"]["sub"]


def test_an_app_that_requires_mfa_asks_for_the_mfa_acr(provider):
    info = provider["clients"]["customer-onboarding-portal"]
    app = create_app({
        "NAME": info["name"], "CLIENT_ID": "customer-onboarding-portal",
        "CLIENT_SECRET": info["client_secret"], "ISSUER": provider["issuer"],
        "BASE_URL": "http://127.0.0.1:5002", "REQUIRE_MFA": True,
        "SECRET_KEY": secrets.token_urlsafe(32),
    })

    response = app.test_client().get("/login")

    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["acr_values"] == [ACR_MFA]


def test_declined_terms_show_an_error_page_with_a_way_to_try_again(browser, shipping,
                                                                   provider):
    response = browser.get(shipping.url + "/login", timeout=HTTP_TIMEOUT)

    page, seen = through_the_identity_provider(browser, response, provider["issuer"],
                                               username=DECLINER, terms="Decline")

    assert seen[-1] == "Terms and Conditions"
    assert page.status == 400
    assert page.url.startswith(shipping.url + "/callback?")
    assert page.h1 == ["Click-N-Ship"]
    assert "access_denied" in page.by_role["alert"]
    assert page.links["Try again"] == "/login"
    assert is_signed_out(Page(browser.get(shipping.url + "/", timeout=HTTP_TIMEOUT)))


def test_an_error_response_is_shown_with_its_code_and_description(browser, delivery):
    response = browser.get(delivery.url + "/callback", params={
        "error": "unmet_authentication_requirements",
        "error_description": "<b>AAL2</b> could not be met",
    }, timeout=HTTP_TIMEOUT)

    page = Page(response)
    assert response.status_code == 400
    assert "unmet_authentication_requirements" in page.by_role["alert"]
    assert "<b>AAL2</b> could not be met" in page.by_role["alert"]  # escaped, shown as text
    assert "<b>" not in response.text
    assert page.links["Try again"] == "/login"


def test_a_callback_with_a_state_this_browser_did_not_send_is_refused(
    browser, delivery, provider
):
    browser.get(delivery.url + "/login", allow_redirects=False, timeout=HTTP_TIMEOUT)

    response = browser.get(delivery.url + "/callback", params={
        "code": "made-up", "state": "not-the-one-sent", "iss": provider["issuer"],
    }, timeout=HTTP_TIMEOUT)

    assert response.status_code == 400
    assert "state_mismatch" in Page(response).by_role["alert"]
    assert is_signed_out(Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT)))


def test_a_callback_from_another_issuer_is_refused(browser, delivery):
    login = browser.get(delivery.url + "/login", allow_redirects=False, timeout=HTTP_TIMEOUT)
    state = parse_qs(urlsplit(login.headers["Location"]).query)["state"][0]

    response = browser.get(delivery.url + "/callback", params={
        "code": "x", "state": state, "iss": "https://attacker.example",
    }, timeout=HTTP_TIMEOUT)

    assert response.status_code == 400
    assert "issuer_mismatch" in Page(response).by_role["alert"]


# --- signing out --------------------------------------------------------------------------------


def test_sign_out_goes_through_rp_initiated_logout_and_back_signed_out(
    browser, delivery, provider
):
    page, _ = sign_in(browser, delivery, provider["issuer"])
    id_token = delivery.session_of(browser)["id_token"]

    leaving = browser.get(urljoin(page.url, page.links["Sign out"]), allow_redirects=False,
                          timeout=HTTP_TIMEOUT)

    assert leaving.status_code == 302
    location = urlsplit(leaving.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == provider["issuer"] + "/logout"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["id_token_hint"] == id_token
    assert query["post_logout_redirect_uri"] == delivery.url + "/"
    assert query["state"]
    back = browser.get(leaving.headers["Location"], timeout=HTTP_TIMEOUT)
    assert back.url == f"{delivery.url}/?state={query['state']}"  # redirected at once
    page = Page(back)
    assert is_signed_out(page)
    assert page.by_role["status"] == "You have signed out."
    # The identity provider's session ended too: signing in again asks for the password.
    again = browser.get(delivery.url + "/login", timeout=HTTP_TIMEOUT)
    assert Page(again).h1 == ["Sign In"] and again.url.startswith(provider["issuer"])


def test_sign_out_at_one_app_signs_the_other_out_by_back_channel_logout(
    browser, delivery, shipping, provider
):
    sign_in(browser, delivery, provider["issuer"])
    page, _ = sign_in(browser, shipping, provider["issuer"])
    assert signed_in_as(Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT))) == USERNAME

    back = browser.get(urljoin(page.url, page.links["Sign out"]), timeout=HTTP_TIMEOUT)

    assert is_signed_out(Page(back)) and back.url.startswith(shipping.url + "/")
    assert is_signed_out(Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT)))


# --- the back-channel logout endpoint -----------------------------------------------------------


def jwks_of(provider) -> dict:
    from joserfc.jwk import KeySet

    keys = requests.get(provider["issuer"] + "/jwks.json", timeout=HTTP_TIMEOUT).json()
    return KeySet.import_key_set(keys)


def signing_key(provider) -> RSAKey:
    """The identity provider's active signing key."""
    return provider["admin"].signing_key()


def logout_token(key: RSAKey, issuer: str, aud: str, sid: str | None, sub: str | None,
                 alg: str = "RS256", **changes) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "aud": aud, "iat": now, "exp": now + 120,
              "jti": secrets.token_urlsafe(12), "events": {BACKCHANNEL_EVENT: {}}}
    if sid is not None:
        claims["sid"] = sid
    if sub is not None:
        claims["sub"] = sub
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    header = {"alg": alg, "kid": key.kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, key)


def post_logout_token(app: RunningApp, token: str) -> requests.Response:
    return requests.post(app.url + "/backchannel-logout", data={"logout_token": token},
                         timeout=HTTP_TIMEOUT)


def test_a_valid_logout_token_ends_the_local_session_of_its_sid(browser, delivery, provider):
    sign_in(browser, delivery, provider["issuer"])
    user = delivery.session_of(browser)["user"]
    other = requests.Session()
    sign_in(other, delivery, provider["issuer"])  # another browser, another sid
    token = logout_token(signing_key(provider), provider["issuer"], "informed-delivery",
                         sid=user["sid"], sub=user["sub"])

    response = post_logout_token(delivery, token)

    assert response.status_code == 200
    assert is_signed_out(Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT)))
    assert "user" not in delivery.session_of(browser)
    assert signed_in_as(Page(other.get(delivery.url + "/", timeout=HTTP_TIMEOUT))) == USERNAME


def test_a_logout_token_with_only_sub_ends_every_local_session_of_that_user(
    browser, delivery, provider
):
    sign_in(browser, delivery, provider["issuer"])
    user = delivery.session_of(browser)["user"]
    token = logout_token(signing_key(provider), provider["issuer"], "informed-delivery",
                         sid=None, sub=user["sub"])

    assert post_logout_token(delivery, token).status_code == 200

    assert is_signed_out(Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT)))
    page, _ = sign_in(browser, delivery, provider["issuer"])  # a later sign-in is not ended
    assert signed_in_as(page) == USERNAME


FORGERIES = {
    "signed by another key": lambda key, iss, user: logout_token(
        forged_key(key), iss, "informed-delivery", user["sid"], user["sub"]),
    "for another client": lambda key, iss, user: logout_token(
        key, iss, "click-n-ship", user["sid"], user["sub"]),
    "from another issuer": lambda key, iss, user: logout_token(
        key, "https://attacker.example", "informed-delivery", user["sid"], user["sub"]),
    "expired": lambda key, iss, user: logout_token(
        key, iss, "informed-delivery", user["sid"], user["sub"],
        iat=int(time.time()) - 900, exp=int(time.time()) - 600),
    "without exp": lambda key, iss, user: logout_token(
        key, iss, "informed-delivery", user["sid"], user["sub"], exp=None),
    "without iat": lambda key, iss, user: logout_token(
        key, iss, "informed-delivery", user["sid"], user["sub"], iat=None),
    "without the back-channel event": lambda key, iss, user: logout_token(
        key, iss, "informed-delivery", user["sid"], user["sub"],
        events={"http://schemas.openid.net/event/other": {}}),
    "with a nonce": lambda key, iss, user: logout_token(
        key, iss, "informed-delivery", user["sid"], user["sub"], nonce="n"),
    "with neither sid nor sub": lambda key, iss, user: logout_token(
        key, iss, "informed-delivery", None, None),
    "unsigned (alg none)": lambda key, iss, user: unsigned_token(iss, user),
    "an ID token": lambda key, iss, user: user["id_token"],
}


def forged_key(real: RSAKey) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": real.kid, "alg": "RS256"})


def unsigned_token(issuer: str, user: dict) -> str:
    import base64

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return ".".join([
        part({"alg": "none", "typ": "logout+jwt"}),
        part({"iss": issuer, "aud": "informed-delivery", "iat": now, "exp": now + 120,
              "sid": user["sid"], "sub": user["sub"], "events": {BACKCHANNEL_EVENT: {}}}),
        "",
    ])


@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_a_forged_or_invalid_logout_token_is_refused_and_the_session_stays(
    forgery, browser, delivery, provider
):
    sign_in(browser, delivery, provider["issuer"])
    stored = delivery.session_of(browser)
    user = dict(stored["user"], id_token=stored["id_token"])
    token = FORGERIES[forgery](signing_key(provider), provider["issuer"], user)

    response = post_logout_token(delivery, token)

    assert response.status_code == 400, forgery
    assert response.json()["error"] == "invalid_request"
    assert signed_in_as(Page(browser.get(delivery.url + "/", timeout=HTTP_TIMEOUT))) == USERNAME


def test_a_back_channel_request_without_a_logout_token_is_refused(delivery):
    response = requests.post(delivery.url + "/backchannel-logout", data={},
                             timeout=HTTP_TIMEOUT)

    assert response.status_code == 400


# --- the launcher (make run) --------------------------------------------------------------------


class Launched:
    """``python -m examples.run_demo`` on free ports, its output collected by a thread."""

    def __init__(self, seeded: Path, tmp_path: Path):
        self.instance, self.clients = copy_instance(seeded, tmp_path)
        self.idp_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.idp_port}"
        env = idp_environment(self.issuer, self.instance)
        self.ports = {client_id: free_port() for client_id in self.clients}
        command = [sys.executable, "-m", "examples.run_demo", "--idp-url", self.issuer,
                   "--start-timeout", "45", "--stop-timeout", "5"]
        for client_id, port in self.ports.items():
            command += ["--port", f"{client_id}={port}"]
        command += ["--", str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.idp_port}",
                    "--workers", "2", "wsgi:app"]
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if "The demo is running" in line:
                self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until_running(self) -> None:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not self.ready.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start:\n{self.output}")
        time.sleep(0.5)  # let the tour finish printing

    def children(self) -> dict[str, int]:
        """The launcher's children by name, from its "started NAME (pid N)" lines."""
        started = re.findall(r"^\[demo\] started (\S+) \(pid (\d+)\)", self.output, re.M)
        return {name: int(pid) for name, pid in started}

    def cleanup(self) -> None:
        """Whatever a failed test left running."""
        pids = [*self.children().values()]
        for pid in pids + [self.process.pid]:
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.reader.join(timeout=5)


def descendants(pid: int) -> list[int]:
    found = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [child, *descendants(child)]
    return found


def has_exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


def wait_exited(pids: list[int], timeout: float) -> list[int]:
    """The pids still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [pid for pid in pids if not has_exited(pid)]
        if not running:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if not has_exited(pid)]


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def launched(seeded, tmp_path):
    demo = Launched(seeded, tmp_path)
    try:
        demo.wait_until_running()
        yield demo
    finally:
        demo.cleanup()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_launcher_runs_the_identity_provider_and_three_apps_and_sigint_stops_them_all(
    launched
):
    children = launched.children()
    assert set(children) == {"idp", "click-n-ship", "customer-onboarding-portal",
                             "informed-delivery"}
    workers = descendants(children["idp"])
    assert len(workers) >= 2, "gunicorn's workers"
    assert requests.get(launched.issuer + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200
    for client_id, port in launched.ports.items():
        page = Page(requests.get(f"http://127.0.0.1:{port}/", timeout=HTTP_TIMEOUT))
        assert page.h1 == [launched.clients[client_id]["name"]]
        assert "Sign in" in page.links
    tour = launched.output
    assert f"http://127.0.0.1:{launched.ports['click-n-ship']} and sign in as newuser / " \
           f"{PASSWORD}" in tour
    assert f"{launched.issuer}/dev/outbox" in tour
    assert "Not Now" in tour and "single sign-on" in tour

    launched.process.send_signal(signal.SIGINT)

    assert launched.process.wait(timeout=EXIT_TIMEOUT) == 0, launched.output
    assert wait_exited([*children.values(), *workers], timeout=10) == [], launched.output
    for port in [launched.idp_port, *launched.ports.values()]:
        assert refuses_connections(port), port


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_launcher_stops_on_sigterm(launched):
    children = launched.children()
    workers = descendants(children["idp"])

    launched.process.send_signal(signal.SIGTERM)

    assert launched.process.wait(timeout=EXIT_TIMEOUT) == 0, launched.output
    assert wait_exited([*children.values(), *workers], timeout=10) == [], launched.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_when_one_app_dies_the_launcher_stops_the_others_and_fails(launched):
    children = launched.children()
    workers = descendants(children["idp"])

    os.kill(children["customer-onboarding-portal"], signal.SIGKILL)

    assert launched.process.wait(timeout=EXIT_TIMEOUT) != 0, launched.output
    assert "customer-onboarding-portal exited" in launched.output
    assert wait_exited([*children.values(), *workers], timeout=10) == [], launched.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_children_exit_even_when_the_launcher_is_killed_outright(launched):
    children = launched.children()
    workers = descendants(children["idp"])

    launched.process.kill()  # SIGKILL: no chance to clean up

    launched.process.wait(timeout=EXIT_TIMEOUT)
    assert wait_exited([*children.values(), *workers], timeout=20) == []
