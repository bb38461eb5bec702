"""Shared fixtures: an application on a migrated database, clients, users, and an actions
helper that walks the sign-in as a browser would (forms with CSRF tokens).

The database is SQLite unless pytest runs with ``--database=postgresql``: each test then gets
its own database on a PostgreSQL server the tests start (tests/services/postgres.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask_migrate import upgrade

from idp import create_app
from idp.extensions import db
from idp.models import Client, User
from idp.security import digest

pytest_plugins = [
    "tests.services.postgres",
    "tests.services.redis_server",
    "tests.log_audit",
]

ISSUER = "http://localhost"
PASSWORD = "correct horse battery"

# The tests choose their own settings: none leaks in from the shell that runs them.
for _name in [n for n in os.environ if n.startswith("IDP_")]:
    del os.environ[_name]

# A production configuration that passes every check (tests change one thing at a time).
PRODUCTION_SETTINGS = {
    "IDP_ENV": "production",
    "IDP_ISSUER": "https://idp.example.com",
    "IDP_SECRET_KEY": "a-production-secret-key-of-more-than-32-characters",
    "IDP_ENCRYPTION_KEY": "a-production-encryption-key-of-more-than-32-characters",
    "IDP_MAIL_BACKEND": "smtp",
    "IDP_SMTP_HOST": "smtp.example.com",
    "IDP_SMTP_SECURITY": "starttls",
    "IDP_MAIL_FROM": "no-reply@idp.example.com",
    "IDP_SMS_BACKEND": "webhook",
    "IDP_SMS_WEBHOOK_URL": "https://sms.example.com/send",
    "IDP_SMS_WEBHOOK_SECRET": "webhook-secret",
    # The cheapest of OWASP's argon2id profiles, the least production accepts.
    "IDP_ARGON2_MEMORY_KIB": "7168",
    "IDP_ARGON2_TIME_COST": "5",
}



def pytest_addoption(parser):
    parser.addoption(
        "--database", choices=("sqlite", "postgresql"), default="sqlite",
        help="database of the tests' applications: an SQLite file per test (default), or a "
             "database per test on a PostgreSQL server started for the run",
    )


# tmp_path -> the URL of that test's database, where it is not the SQLite file in tmp_path.
_DATABASE_URLS: dict[str, str] = {}


def base_config(tmp_path, **overrides):
    """Settings for a test app. Plugins are off unless a test turns them on, so the core's
    tests prove the core alone; the MFA tests set ``IDP_PLUGINS="plugins.mfa"``.

    The database is the test's own (see ``database_url``): every app made with the same
    ``tmp_path`` shares it, as several instances of the IdP would."""
    config = {
        "TESTING": True,
        "IDP_PLUGINS": "",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "IDP_ISSUER": ISSUER,
        "IDP_SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        # Cheap argon2id parameters keep the suite fast (development accepts them).
        "IDP_ARGON2_MEMORY_KIB": 1024,
        "IDP_ARGON2_TIME_COST": 1,
        "SQLALCHEMY_DATABASE_URI": (_DATABASE_URLS.get(str(tmp_path))
                                    or "sqlite:///" + str(tmp_path / "idp.db")),
    }
    config.update(overrides)
    return config


#: The plugins whose tables (their own Alembic branches) the tests' template databases have.
MIGRATED_PLUGINS = "plugins.mfa"


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An SQLite database file with every migration applied, copied for each test: the
    core's and the plugins' branches (``heads``), so a test may turn a plugin on."""
    path = tmp_path_factory.mktemp("template")
    app = create_app(base_config(path, IDP_PLUGINS=MIGRATED_PLUGINS))
    with app.app_context():
        upgrade(revision="heads")
    return path / "idp.db"


@pytest.fixture(scope="session")
def migrated_postgres(postgres_server, tmp_path_factory):
    """A database with every migration applied (``heads``, as ``migrated_db``) on the test
    PostgreSQL server, as the template of one copy per test (``take()`` and ``give_back(url)``)."""
    from tests.services.postgres import TemplateCopies

    path = tmp_path_factory.mktemp("postgres-template")
    url = postgres_server.create_database("idp_template")
    app = create_app(base_config(path, IDP_PLUGINS=MIGRATED_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        upgrade(revision="heads")
        db.engine.dispose()  # a template must have no connections when it is copied
    copies = TemplateCopies(postgres_server, "idp_template")
    try:
        yield copies
    finally:
        copies.close()


@pytest.fixture
def database_url(request, tmp_path):
    """This test's own migrated database, a copy of ``migrated_db`` (or, with
    ``--database=postgresql``, of ``migrated_postgres``); returns its URL. Every app made
    with ``base_config(tmp_path)`` connects to it. A PostgreSQL one is dropped afterwards."""
    if request.config.getoption("--database") != "postgresql":
        shutil.copy(request.getfixturevalue("migrated_db"), tmp_path / "idp.db")
        yield "sqlite:///" + str(tmp_path / "idp.db")
        return
    copies = request.getfixturevalue("migrated_postgres")
    url = copies.take()
    _DATABASE_URLS[str(tmp_path)] = url
    try:
        yield url
    finally:
        del _DATABASE_URLS[str(tmp_path)]
        copies.give_back(url)


@pytest.fixture
def app_config(tmp_path):
    return {}


@pytest.fixture(params=["database", "redis"])
def rate_limit_backend(request) -> dict:
    """Settings that keep the rate limits in the database, then in Redis: a test module
    whose ``app_config`` includes them runs every test against both."""
    if request.param == "redis":
        return {"IDP_REDIS_URL": request.getfixturevalue("redis_url")}
    return {}


def _empty_g():
    from flask import g

    g.__dict__.clear()


@pytest.fixture
def app(tmp_path, database_url, app_config):
    application = create_app(base_config(tmp_path, **app_config))
    # Requests made while this application context is active reuse it: give each one an
    # empty ``g``, as every request on a server gets.
    application.before_request_funcs.setdefault(None, []).insert(0, _empty_g)
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def assert_setting_refused(tmp_path, monkeypatch, name: str, value: str, **settings):
    """The IdP refuses to start with ``name=value``, naming the variable, whether the value
    comes from the environment or from the configuration (beside ``settings``, e.g. a
    plugin's); returns the first refusal."""
    from idp.config import ConfigError

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as from_environment:
        create_app(base_config(tmp_path, **settings))
    monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match=name):
        create_app(base_config(tmp_path, **{**settings, name: value}))
    return from_environment.value


@pytest.fixture
def production_app(tmp_path, database_url):
    """``production_app(**settings)``: an application with ``PRODUCTION_SETTINGS`` (and
    ``settings``) on this test's database, its context pushed until the test ends."""
    contexts = []

    def start(**settings):
        application = create_app(base_config(tmp_path, **{**PRODUCTION_SETTINGS, **settings}))
        contexts.append(application.app_context())
        contexts[-1].push()
        return application

    yield start
    for context in reversed(contexts):
        db.session.remove()
        db.engine.dispose()
        context.pop()


def make_client(**kwargs) -> tuple[Client, str | None]:
    """Register a client directly; returns it with its plain secret."""
    secret = secrets.token_urlsafe(32)
    auth_method = kwargs.pop("auth_method", "client_secret_basic")
    values = dict(
        client_id=kwargs.pop("client_id", "app-" + secrets.token_hex(4)),
        name="Test App",
        display_name="Test App",
        description="An application used in tests.",
        auth_method=auth_method,
        client_secret_digest=digest(secret) if auth_method.startswith("client_secret") else None,
        redirect_uris=["https://rp.example/cb"],
        post_logout_redirect_uris=["https://rp.example/bye"],
        grant_types=["authorization_code", "refresh_token"],
        scope="openid profile email phone offline_access",
        help_contact="help@rp.example",
        settings={},
    )
    values.update(kwargs)
    row = Client(**values)
    db.session.add(row)
    db.session.commit()
    return row, (secret if row.client_secret_digest else None)


def make_user(username="alice", password=PASSWORD, **kwargs) -> User:
    from idp.accounts import create_user

    user = create_user(username, kwargs.pop("email", f"{username}@example.com"), password,
                       **kwargs)
    db.session.commit()
    return user


class FormParser(HTMLParser):
    """Collects forms: action, method and the values of their inputs."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "method": attrs.get("method"),
                               "fields": {}})
        elif tag in ("input", "button") and self.forms and attrs.get("name"):
            if attrs.get("type") in ("checkbox", "radio") and "checked" not in attrs:
                return
            self.forms[-1]["fields"].setdefault(attrs["name"], attrs.get("value", ""))


def forms(html: str) -> list[dict]:
    parser = FormParser()
    parser.feed(html)
    return parser.forms


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


class OidcActions:
    """Walks the sign-in like a browser and a relying party would."""

    def __init__(self, http):
        self.http = http
        self.verifier = None

    def authorize(self, rp: Client, pkce=True, **params):
        query = {
            "response_type": "code",
            "client_id": rp.client_id,
            "redirect_uri": rp.redirect_uris[0],
            "scope": "openid profile email",
            "state": "st-" + secrets.token_hex(4),
            "nonce": "n-" + secrets.token_hex(4),
        }
        if pkce:
            self.verifier, challenge = pkce_pair()
            query.update(code_challenge=challenge, code_challenge_method="S256")
        query.update(params)
        query = {k: v for k, v in query.items() if v is not None}
        self.last_params = query
        return self.http.get("/authorize?" + urlencode(query))

    def submit(self, response, data=None, button=None):
        """Submit the page's first form with ``data`` over its fields."""
        form = forms(response.get_data(as_text=True))[0]
        fields = {k: v for k, v in form["fields"].items()
                  if k not in ("submit", "allow", "deny", "agree", "decline")}
        fields.update(data or {})
        if button:
            fields[button] = "1"
        return self.http.post(form["action"] or response.request.path, data=fields)

    def login(self, response, username="alice", password=PASSWORD):
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        page = self.http.get(response.headers["Location"])
        assert "Log In" in page.get_data(as_text=True)
        return self.submit(page, {"username": username, "password": password},
                           button="submit")

    # Pages the default sign-in answers by pressing a button: heading -> button name.
    AUTO_ANSWERS = {"<h1>Allow access</h1>": "allow", "<h1>Terms and Conditions</h1>": "agree"}

    def follow(self, response, limit=10, answer_pages=True):
        """Follow redirects on the IdP until one leaves it (the client's redirect URI).

        Consent and terms pages are accepted on the way unless ``answer_pages`` is False.
        """
        for _ in range(limit):
            if response.status_code == 200 and answer_pages:
                html = response.get_data(as_text=True)
                button = next((b for h, b in self.AUTO_ANSWERS.items() if h in html), None)
                if button is None:
                    return response
                response = self.submit(response, button=button)
                continue
            if response.status_code != 302:
                return response
            location = response.headers["Location"]
            if not location.startswith("/") and not location.startswith(ISSUER):
                return response
            response = self.http.get(location)
        raise AssertionError("too many redirects")

    def callback_params(self, response) -> dict:
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        return {k: v[0] for k, v in query.items()}

    def sign_in(self, rp, username="alice", password=PASSWORD, **params) -> dict:
        response = self.follow(self.login(self.authorize(rp, **params), username, password))
        return self.callback_params(response)

    def token(self, rp, secret, code, **extra):
        data = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": rp.redirect_uris[0]}
        if self.verifier:
            data["code_verifier"] = self.verifier
        data.update(extra)
        return self.http.post("/token", data=data, headers=basic_auth(rp.client_id, secret))


def basic_auth(client_id, secret) -> dict:
    if secret is None:
        return {}
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.fixture
def password_hash_calls(monkeypatch) -> dict[str, int]:
    """How many argon2id verifications and hashes the test causes from now on."""
    import argon2

    calls = {"verify": 0, "hash": 0}
    for name in calls:
        real = getattr(argon2.PasswordHasher, name)

        def counted(self, *args, __name=name, __real=real, **kwargs):
            calls[__name] += 1
            return __real(self, *args, **kwargs)

        monkeypatch.setattr(argon2.PasswordHasher, name, counted)
    return calls


@pytest.fixture
def oidc(client):
    return OidcActions(client)


@pytest.fixture
def rp(app):
    return make_client(client_id="rp-app")


@pytest.fixture
def alice(app):
    return make_user("alice")


# --- mail servers on loopback (see tests/smtp_server.py) -------------------------------------

@pytest.fixture(scope="session")
def smtp_tls_files(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    from tests.smtp_server import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server(smtp_tls_files):
    """Start a real SMTP server: ``smtp_server(security="none"|"starttls"|"tls",
    login=(user, password), rcpt_reply="550 ...", data_reply="451 ...")``. Its ``messages``
    are what arrived and ``settings()`` the IdP settings to send there. Stopped after the test.
    """
    from tests.smtp_server import SmtpServer

    started = []

    def start(security="none", **kwargs):
        if security != "none":
            kwargs.setdefault("tls_files", smtp_tls_files)
        server = SmtpServer(security, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def silent_server():
    """A loopback TCP server that accepts connections and never answers."""
    from tests.smtp_server import SilentServer

    server = SilentServer().start()
    yield server
    server.stop()


def install_plugin_distribution(tmp_path, monkeypatch, distribution: str, entry: str) -> None:
    """A distribution named ``distribution`` on ``sys.path`` that offers ``entry``
    (``name = module:attribute``) in the ``idp.plugins`` entry-point group, as an installed
    third party's plugin package would."""
    info = tmp_path / "site" / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(f"[idp.plugins]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
