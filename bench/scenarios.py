"""What the virtual users do: one request per operation for the API scenarios, a whole
browser sign-in for ``sign-in``, one argon2id verification for the ceiling."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bench.load import OperationError
from bench.rawhttp import RawHttp, basic_authorization
from bench.seed import USERNAME_FORMAT, totp_secret
from bench.server import PASSWORD, Client, Instance

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
TIMEOUT = httpx.Timeout(30.0)
SIGN_IN_SCOPE = "openid profile email"
OFFLINE_SCOPE = "openid profile email offline_access"
MAX_HOPS = 20


def new_http(base_url: str, connections: int = 1) -> httpx.AsyncClient:
    """An HTTP/1.1 client with keep-alive (gunicorn's sync worker closes each connection
    after its answer; the client then opens a new one)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT,
                             follow_redirects=False)


def basic(client: Client) -> tuple[str, str]:
    return (client.client_id, client.secret)


def expect(response: httpx.Response, status: int = 200) -> httpx.Response:
    if response.status_code != status:
        raise OperationError(f"{response.request.method} {response.request.url.path} answered "
                             f"{response.status_code}: {response.text[:200]!r}")
    return response


# --- the sign-in -------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def answer_page(path: str, html: str, username: str, code: str) -> tuple[str, dict]:
    """What a person submits on the sign-in page at ``path``: the page's name and the form
    (its CSRF token, the fields and the button)."""
    match = CSRF.search(html)
    if match is None:
        raise OperationError(f"no form on {path}")
    form = {"csrf_token": match.group(1)}
    if path.startswith("/signin/"):
        return "password", {**form, "username": username, "password": PASSWORD,
                            "submit": "Log In"}
    if path.startswith("/mfa/challenge/"):
        return "totp", {**form, "passcode": code, "submit": "Submit"}
    if path.startswith("/consent/"):
        return "consent", {**form, "allow": "Allow"}
    if path.startswith("/terms/"):
        return "terms", {**form, "agree": "I Agree"}
    raise OperationError(f"unexpected page {path}")


class Accounts:
    """Hands out benchmark accounts, each with its next unused TOTP code.

    A code is accepted once per account and time step (30 s), so an account signs in again
    only in a later step; accounts are taken in a random order over the whole table."""

    def __init__(self, instance: Instance, first: int = 0):
        self.seed = instance.seed
        self.order = list(range(first, instance.users))
        secrets.SystemRandom().shuffle(self.order)
        self.next = 0
        self.last_step: dict[int, int] = {}
        self.totps: dict[int, pyotp.TOTP] = {}

    def take(self) -> tuple[str, str]:
        for _ in range(len(self.order)):
            number = self.order[self.next]
            self.next = (self.next + 1) % len(self.order)
            step = int(time.time() // 30)
            if self.last_step.get(number, -1) < step:
                self.last_step[number] = step
                username = USERNAME_FORMAT.format(number)
                totp = self.totps.get(number)
                if totp is None:
                    totp = self.totps[number] = pyotp.TOTP(totp_secret(self.seed, username))
                return username, totp.at(step * 30)
        raise OperationError("every account used its code of this time step")


@dataclass
class Browser:
    """A virtual user: a browser (its own cookies) in front of a relying party."""

    http: httpx.AsyncClient
    requests: int = 0
    refresh_token: str | None = None
    access_token: str | None = None

    async def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        self.requests += 1
        return await self.http.request(method, url, **kwargs)


class SignIn:
    """authorize → password → TOTP → consent (for offline_access) → terms → code → token →
    ID token checked (signature against the JWKS, iss, aud, nonce, exp)."""

    def __init__(self, instance: Instance, accounts: Accounts):
        self.issuer = instance.issuer
        self.client = instance.code_client
        self.accounts = accounts
        self.keys: KeySet | None = None
        self.completed = 0
        self.requests = 0  # HTTP requests of the completed sign-ins

    async def jwks(self, http: httpx.AsyncClient) -> KeySet:
        if self.keys is None:
            self.keys = KeySet.import_key_set(expect(await http.get("/jwks.json")).json())
        return self.keys

    async def run(self, browser: Browser, scope: str = SIGN_IN_SCOPE) -> dict:
        http = browser.http
        http.cookies.clear()
        first_request = browser.requests
        username, code = self.accounts.take()
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        query = urlencode({
            "response_type": "code", "client_id": self.client.client_id,
            "redirect_uri": self.client.redirect_uri, "scope": scope, "state": state,
            "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
        response = await browser.request("GET", "/authorize?" + query)
        pages = []
        for _ in range(MAX_HOPS):
            if response.status_code in (302, 303):
                location = response.headers["location"]
                if location.startswith(self.client.redirect_uri):
                    break
                response = await browser.request("GET", location)
                continue
            expect(response)
            path = response.url.path
            page, form = answer_page(path, response.text, username, code)
            pages.append(page)
            response = await browser.request("POST", path, data=form)
        else:
            raise OperationError("too many redirects")
        params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        if params.get("state") != state or params.get("iss") != self.issuer \
                or "code" not in params:
            raise OperationError(f"bad authorization response {sorted(params)}")
        if pages[:2] != ["password", "totp"]:
            raise OperationError(f"unexpected pages {pages}")
        token = expect(await browser.request(
            "POST", "/token", auth=basic(self.client),
            data={"grant_type": "authorization_code", "code": params["code"],
                  "redirect_uri": self.client.redirect_uri, "code_verifier": verifier})).json()
        claims = await self.validate(http, token.get("id_token"), nonce)
        if claims.get("amr") is None or "otp" not in claims["amr"]:
            raise OperationError(f"the ID token's amr is {claims.get('amr')}")
        browser.access_token = token["access_token"]
        browser.refresh_token = token.get("refresh_token")
        self.completed += 1
        self.requests += browser.requests - first_request
        return claims

    async def validate(self, http: httpx.AsyncClient, id_token: str | None,
                       nonce: str) -> dict:
        if not id_token:
            raise OperationError("no ID token")
        keys = await self.jwks(http)
        try:
            try:
                decoded = jwt.decode(id_token, keys, algorithms=["RS256"])
            except JoseError:
                self.keys = None  # a key rotated since: fetch the JWKS again, once
                decoded = jwt.decode(id_token, await self.jwks(http), algorithms=["RS256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client.client_id},
                nonce={"essential": True, "value": nonce},
                sub={"essential": True}, exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise OperationError(f"invalid ID token: {exc}") from None
        return decoded.claims


# --- the scenarios -----------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    description: str
    concurrency: int
    kind: str = "api"  # api (healthz ratio), sign-in, ceiling


SCENARIOS = [
    Scenario("healthz", "GET /healthz: the framework's own ceiling", 8),
    Scenario("discovery", "GET /.well-known/openid-configuration", 8),
    Scenario("jwks", "GET /jwks.json", 8),
    Scenario("client_credentials", "POST /token, client_credentials, HTTP Basic", 8),
    Scenario("refresh", "POST /token, refresh_token with rotation (a chain per user)", 8),
    Scenario("userinfo", "GET /userinfo with a bearer access token", 8),
    Scenario("sign-in", "authorize, password, TOTP, terms, code, token, ID token checked", 4,
             kind="sign-in"),
]
CEILING = Scenario("argon2id", "one argon2id verification per request (bench.argon2_app)", 4,
                   kind="ceiling")
REFERENCE = Scenario("flask", "GET /healthz of a bare Flask app (bench.flask_app)", 8,
                     kind="reference")


@dataclass
class ApiUser:
    """A virtual user of the one-request scenarios: its connection and, for refresh and
    userinfo, its tokens."""

    http: RawHttp
    refresh_token: str | None = None
    access_token: str | None = None
    request: bytes = b""

    @property
    def requests(self) -> int:
        return self.http.requests


class Workload:
    """The virtual users and operations of every scenario against one instance."""

    def __init__(self, instance: Instance):
        self.instance = instance
        self.base = instance.issuer
        self.clients: list[httpx.AsyncClient] = []
        self.raw: list[RawHttp] = []
        self.signin = SignIn(instance, Accounts(instance))
        self.users: dict[str, list] = {}

    def http(self, connections: int = 1) -> httpx.AsyncClient:
        client = new_http(self.base, connections)
        self.clients.append(client)
        return client

    def api_user(self) -> ApiUser:
        raw = RawHttp(self.base)
        self.raw.append(raw)
        return ApiUser(raw)

    async def prepare(self) -> None:
        """Virtual users for every scenario, and a refresh token chain and an access token
        for each virtual user of ``refresh`` and ``userinfo`` (from sign-ins with
        offline_access: consent and terms on the way)."""
        service = self.instance.service_client
        fixed = {
            "healthz": ("GET", "/healthz", None, None),
            "discovery": ("GET", "/.well-known/openid-configuration", None, None),
            "jwks": ("GET", "/jwks.json", None, None),
            "client_credentials": ("POST", "/token", {
                "Authorization": basic_authorization(service.client_id, service.secret)},
                {"grant_type": "client_credentials"}),
        }
        for scenario in SCENARIOS:
            if scenario.kind == "sign-in":
                self.users[scenario.name] = [Browser(self.http())
                                             for _ in range(scenario.concurrency)]
                continue
            users = [self.api_user() for _ in range(scenario.concurrency)]
            if scenario.name in fixed:
                method, path, headers, form = fixed[scenario.name]
                for user in users:
                    user.request = user.http.prepare(method, path, headers, form)
            self.users[scenario.name] = users
        browsers = [Browser(self.http()) for _ in self.users["refresh"]]
        await asyncio.gather(*(self.signin.run(b, OFFLINE_SCOPE) for b in browsers))
        if any(b.refresh_token is None for b in browsers):
            raise RuntimeError("a sign-in with offline_access gave no refresh token")
        for browser, user in zip(browsers, self.users["refresh"], strict=True):
            user.refresh_token = browser.refresh_token
        for browser, user in zip(browsers, self.users["userinfo"], strict=False):
            user.request = user.http.prepare(
                "GET", "/userinfo", {"Authorization": f"Bearer {browser.access_token}"})

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)
        await asyncio.gather(*(r.close() for r in self.raw), return_exceptions=True)

    def operation(self, name: str):
        code_client = self.instance.code_client
        refresh_authorization = basic_authorization(code_client.client_id, code_client.secret)

        async def fixed(user: ApiUser) -> None:
            answer = await user.http.send(user.request)
            if answer.status != 200:
                raise OperationError(f"{name} answered {answer.status}: {answer.body[:200]!r}")

        async def client_credentials(user: ApiUser) -> None:
            answer = await user.http.send(user.request)
            if answer.status != 200 or b'"access_token"' not in answer.body:
                raise OperationError(f"token answered {answer.status}: {answer.body[:200]!r}")

        async def refresh(user: ApiUser) -> None:
            if user.refresh_token is None:
                raise OperationError("this virtual user's refresh token chain is broken")
            token, user.refresh_token = user.refresh_token, None
            answer = await user.http.send(user.http.prepare(
                "POST", "/token", {"Authorization": refresh_authorization},
                {"grant_type": "refresh_token", "refresh_token": token}))
            if answer.status != 200:
                raise OperationError(f"token answered {answer.status}: {answer.body[:200]!r}")
            issued = json.loads(answer.body).get("refresh_token")
            if not issued or issued == token:
                raise OperationError("the refresh token did not rotate")
            user.refresh_token = issued

        async def userinfo(user: ApiUser) -> None:
            answer = await user.http.send(user.request)
            if answer.status != 200 or b'"sub"' not in answer.body:
                raise OperationError(f"userinfo answered {answer.status}: {answer.body[:200]!r}")

        async def sign_in(browser: Browser) -> None:
            await self.signin.run(browser)

        return {"healthz": fixed, "discovery": fixed, "jwks": fixed,
                "client_credentials": client_credentials, "refresh": refresh,
                "userinfo": userinfo, "sign-in": sign_in}[name]


class OneRequestWorkload:
    """Virtual users sending one fixed request to a server of their own: the argon2id
    ceiling (``bench.argon2_app``) or the bare Flask reference (``bench.flask_app``)."""

    def __init__(self, base_url: str, scenario: Scenario, method: str, path: str,
                 form: dict | None = None):
        self.users = [ApiUser(RawHttp(base_url)) for _ in range(scenario.concurrency)]
        self.path = path
        for user in self.users:
            user.request = user.http.prepare(method, path, form=form)

    async def operation(self, user: ApiUser) -> None:
        answer = await user.http.send(user.request)
        if answer.status != 200:
            raise OperationError(f"{self.path} answered {answer.status}")

    async def close(self) -> None:
        await asyncio.gather(*(u.http.close() for u in self.users), return_exceptions=True)


def ceiling_workload(base_url: str) -> OneRequestWorkload:
    return OneRequestWorkload(base_url, CEILING, "POST", "/verify", form={})


def reference_workload(base_url: str) -> OneRequestWorkload:
    return OneRequestWorkload(base_url, REFERENCE, "GET", "/healthz")
