"""Configuration from ``IDP_*`` environment variables.

Every setting has a documented default (see README.md). Values are read once, when the
application is created; tests pass overrides to ``create_app(test_config)``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from idp import passwords
from idp.passwords import OWASP_PROFILES, meets_owasp_minimum

# name -> (default, cast). Defaults are for the embedded development setup.
SETTINGS: dict[str, tuple[Any, type]] = {
    "IDP_ENV": ("development", str),
    "IDP_SECRET_KEY": ("", str),
    "IDP_ENCRYPTION_KEY": ("", str),
    # Earlier values of IDP_ENCRYPTION_KEY, comma separated: they still decrypt.
    "IDP_ENCRYPTION_OLD_KEYS": ("", str),
    "IDP_ISSUER": ("http://127.0.0.1:5000", str),
    "IDP_DATABASE_URL": ("", str),
    # PostgreSQL connections (SQLite keeps SQLAlchemy's defaults)
    "IDP_DB_POOL_SIZE": (5, int),
    "IDP_DB_MAX_OVERFLOW": (10, int),
    "IDP_DB_POOL_TIMEOUT": (30, int),
    "IDP_DB_POOL_RECYCLE": (1800, int),
    "IDP_DB_STATEMENT_TIMEOUT_MS": (0, int),
    "IDP_PLUGINS": ("plugins.mfa", str),
    "IDP_BRAND_NAME": ("IdP account", str),
    "IDP_SUPPORT_CONTACT": ("the help desk", str),
    "IDP_CODE_LIFETIME": (60, int),
    "IDP_ACCESS_TOKEN_LIFETIME": (3600, int),
    "IDP_ID_TOKEN_LIFETIME": (3600, int),
    "IDP_REFRESH_TOKEN_LIFETIME": (30 * 24 * 3600, int),
    "IDP_SESSION_LIFETIME": (12 * 3600, int),
    "IDP_PENDING_LIFETIME": (30 * 60, int),
    "IDP_BACKCHANNEL_TIMEOUT": (3.0, float),
    "IDP_BACKCHANNEL_TOTAL_TIMEOUT": (5.0, float),
    "IDP_CLIENT_ASSERTION_LEEWAY": (60, int),
    # Keys fetched from a client's jwks_uri (private_key_jwt): how long they are used, the
    # least time between two fetches (also after a failure or an unknown kid), the timeout.
    "IDP_CLIENT_JWKS_CACHE_SECONDS": (300, int),
    "IDP_CLIENT_JWKS_REFETCH_SECONDS": (60, int),
    "IDP_CLIENT_JWKS_TIMEOUT": (3.0, float),
    # Production: back-channel logout URIs and jwks_uri may reach loopback and private
    # networks (never link-local or metadata addresses).
    "IDP_ALLOW_PRIVATE_NETWORK_TARGETS": (False, bool),
    # Seconds a worker serves /jwks.json from memory: a key rotated elsewhere (another
    # instance, the command line) is published by every worker within this time.
    "IDP_JWKS_CACHE_SECONDS": (5, int),
    "IDP_LOG_LEVEL": ("INFO", str),
    "IDP_LOG_FORMAT": ("", str),
    "IDP_PROXY_COUNT": (0, int),
    "IDP_METRICS_TOKEN": ("", str),
    # Shared rate-limit counters (the database when unset)
    "IDP_REDIS_URL": ("", str),
    "IDP_REDIS_TIMEOUT": (2.0, float),
    # Message delivery
    "IDP_MAIL_BACKEND": ("outbox", str),
    "IDP_MAIL_FROM": ("no-reply@localhost", str),
    "IDP_SMTP_HOST": ("localhost", str),
    "IDP_SMTP_PORT": (25, int),
    "IDP_SMTP_SECURITY": ("none", str),
    "IDP_SMTP_USERNAME": ("", str),
    "IDP_SMTP_PASSWORD": ("", str),
    "IDP_SMTP_TIMEOUT": (10.0, float),
    "IDP_SMTP_CA_FILE": ("", str),
    # Production: SMTP without TLS (IDP_SMTP_SECURITY=none) only when this says so.
    "IDP_SMTP_ALLOW_PLAINTEXT": (False, bool),
    "IDP_SMS_BACKEND": ("outbox", str),
    "IDP_SMS_TIMEOUT": (10.0, float),
    "IDP_SMS_WEBHOOK_URL": ("", str),
    "IDP_SMS_WEBHOOK_SECRET": ("", str),
    "IDP_TWILIO_ACCOUNT_SID": ("", str),
    "IDP_TWILIO_AUTH_TOKEN": ("", str),
    "IDP_TWILIO_FROM_NUMBER": ("", str),
    "IDP_TWILIO_MESSAGING_SERVICE_SID": ("", str),
    "IDP_TWILIO_BASE_URL": ("https://api.twilio.com", str),
    "IDP_DEV_OUTBOX": (False, bool),
    # argon2id password hashing (idp.passwords: an OWASP profile, one lane)
    "IDP_ARGON2_MEMORY_KIB": (passwords.DEFAULT_MEMORY_KIB, int),
    "IDP_ARGON2_TIME_COST": (passwords.DEFAULT_TIME_COST, int),
    "IDP_ARGON2_PARALLELISM": (passwords.DEFAULT_PARALLELISM, int),
    # Password attempts
    "IDP_LOGIN_LIMIT_PER_USER": (10, int),
    "IDP_LOGIN_LIMIT_PER_ADDRESS": (100, int),
    "IDP_LOGIN_LIMIT_WINDOW": (15 * 60, int),
    # Send throttles (DESIGN §6)
    "IDP_PASSCODE_RESEND_SECONDS": (30, int),
    "IDP_SEND_LIMIT_PER_ACCOUNT": (5, int),
    "IDP_SEND_LIMIT_WINDOW": (15 * 60, int),
    "IDP_SMS_LIMIT_PER_PHONE": (10, int),
    "IDP_SMS_LIMIT_GLOBAL_PER_HOUR": (1000, int),
    "IDP_LINK_LIMIT_PER_ACCOUNT": (5, int),
    "IDP_LINK_LIMIT_WINDOW": (3600, int),
    "IDP_LINK_LIMIT_GLOBAL_PER_HOUR": (1000, int),
    # Self-service accounts: Create New Account (off: the page says whom to contact)
    "IDP_SELF_REGISTRATION": (True, bool),
    "IDP_SIGNUP_LIMIT_PER_ADDRESS": (5, int),
    "IDP_SIGNUP_LIMIT_WINDOW": (3600, int),
    "IDP_SIGNUP_LIMIT_GLOBAL_PER_HOUR": (500, int),
    # Forgot your username/password: per address or user name entered, per client address
    "IDP_RECOVERY_LIMIT_PER_IDENTIFIER": (5, int),
    "IDP_RECOVERY_LIMIT_PER_ADDRESS": (20, int),
    "IDP_RECOVERY_LIMIT_WINDOW": (3600, int),
    "IDP_RESET_LINK_MINUTES": (30, int),
    "IDP_VERIFY_LINK_MINUTES": (24 * 60, int),
    # The account page: how recent the password or a factor must be to change a security
    # setting (the email, the MFA methods)
    "IDP_ACCOUNT_FRESH_SECONDS": (300, int),
    "IDP_EMAIL_CHANGE_LINK_MINUTES": (60, int),
}

# Seconds clients may cache /jwks.json (its Cache-Control max-age).
JWKS_MAX_AGE = 60

MAIL_BACKENDS = ("smtp", "outbox")
SMS_BACKENDS = ("outbox", "webhook", "twilio")
SMTP_SECURITY = ("none", "starttls", "tls")


class ConfigError(RuntimeError):
    """Raised when the configuration is unsafe or incomplete; the message says what to fix."""


def _cast(name: str, value: str, kind: type) -> Any:
    if kind is bool:
        lowered = value.strip().lower()
        if lowered not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            raise ConfigError(f"{name} must be 1 or 0 (it is {value!r}).")
        return lowered in {"1", "true", "yes", "on"}
    try:
        return kind(value)
    except ValueError:
        what = {int: "a whole number", float: "a number"}.get(kind, f"a {kind.__name__}")
        raise ConfigError(f"{name} must be {what} (it is {value!r}).") from None


def load_settings(extra: dict[str, tuple[Any, type]] | None = None,
                  environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Return every ``IDP_*`` setting (the core's and ``extra``, e.g. a plugin's
    ``default_config``), the environment first, then the default."""
    environ = os.environ if environ is None else environ
    specs = {**(extra or {}), **SETTINGS}
    out: dict[str, Any] = {}
    for name, (default, kind) in specs.items():
        raw = environ.get(name)
        out[name] = default if raw in (None, "") else _cast(name, raw, kind)
    return out


def development_secret_key(instance_path: str) -> str:
    """A random key kept in the instance folder, so sessions survive restarts in development."""
    path = Path(instance_path) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


# Send throttles: name -> smallest allowed value (0 seconds switches the interval off).
THROTTLE_MINIMUMS = {
    "IDP_PASSCODE_RESEND_SECONDS": 0,
    "IDP_SEND_LIMIT_PER_ACCOUNT": 1,
    "IDP_SEND_LIMIT_WINDOW": 1,
    "IDP_SMS_LIMIT_PER_PHONE": 1,
    "IDP_SMS_LIMIT_GLOBAL_PER_HOUR": 1,
    "IDP_LINK_LIMIT_PER_ACCOUNT": 1,
    "IDP_LINK_LIMIT_WINDOW": 1,
    "IDP_LINK_LIMIT_GLOBAL_PER_HOUR": 1,
    "IDP_LOGIN_LIMIT_PER_USER": 1,
    "IDP_LOGIN_LIMIT_PER_ADDRESS": 1,
    "IDP_LOGIN_LIMIT_WINDOW": 1,
    "IDP_SIGNUP_LIMIT_PER_ADDRESS": 1,
    "IDP_SIGNUP_LIMIT_WINDOW": 1,
    "IDP_SIGNUP_LIMIT_GLOBAL_PER_HOUR": 1,
    "IDP_RECOVERY_LIMIT_PER_IDENTIFIER": 1,
    "IDP_RECOVERY_LIMIT_PER_ADDRESS": 1,
    "IDP_RECOVERY_LIMIT_WINDOW": 1,
    "IDP_RESET_LINK_MINUTES": 1,
    "IDP_VERIFY_LINK_MINUTES": 1,
    "IDP_ACCOUNT_FRESH_SECONDS": 30,
    "IDP_EMAIL_CHANGE_LINK_MINUTES": 1,
}


# Database connection settings: name -> smallest allowed value.
DATABASE_MINIMUMS = {
    "IDP_DB_POOL_SIZE": 1,
    "IDP_DB_MAX_OVERFLOW": 0,
    "IDP_DB_POOL_TIMEOUT": 1,
    "IDP_DB_POOL_RECYCLE": 0,
    "IDP_DB_STATEMENT_TIMEOUT_MS": 0,
}


def check_range(config: dict[str, Any], name: str, low: float, high: float | None = None,
                kind: type = int) -> None:
    """Refuse ``name`` unless it is a ``kind`` from ``low`` to ``high`` (no upper bound
    when None). A string (an override given to ``create_app``) is read as the environment
    would be, and stored cast."""
    value = config[name]
    if isinstance(value, str):
        value = config[name] = _cast(name, value, kind)
    what = "a whole number" if kind is int else "a number"
    kinds = (int,) if kind is int else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds) or value < low
            or (high is not None and value > high)):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{name} must be {what} {span} (it is {value!r}).")


def check_database_settings(config: dict[str, Any]) -> None:
    """Refuse connection pool and timeout settings SQLAlchemy or PostgreSQL cannot use."""
    for name, minimum in DATABASE_MINIMUMS.items():
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name} must be a whole number of at least {minimum} "
                              f"(it is {value!r}).")


def database_url(url: str) -> str:
    """The SQLAlchemy URL to connect with: PostgreSQL URLs without a driver use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def engine_options(config: dict[str, Any]) -> dict[str, Any]:
    """SQLAlchemy engine options for the configured database: on PostgreSQL the pool
    settings, a liveness check before a pooled connection is used, and the statement timeout
    (0: none); on SQLite, a wait of 30 s for the write lock."""
    url = config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}
    if not url.startswith("postgresql"):
        return {}
    options: dict[str, Any] = {
        "pool_size": config["IDP_DB_POOL_SIZE"],
        "max_overflow": config["IDP_DB_MAX_OVERFLOW"],
        "pool_timeout": config["IDP_DB_POOL_TIMEOUT"],
        "pool_recycle": config["IDP_DB_POOL_RECYCLE"] or -1,
        "pool_pre_ping": True,
    }
    if config["IDP_DB_STATEMENT_TIMEOUT_MS"]:
        options["connect_args"] = {
            "options": f"-c statement_timeout={config['IDP_DB_STATEMENT_TIMEOUT_MS']}"
        }
    return options



def check_choices(config: dict[str, Any]) -> None:
    """Refuse settings outside their allowed values, naming the variable.

    A setting given as a string (an override passed to ``create_app``) is read as the
    environment would be, so ``"0"`` is off and ``"abc"`` is refused for a number.
    """
    for name, (_default, kind) in SETTINGS.items():
        if kind is not str and isinstance(config.get(name), str):
            config[name] = _cast(name, config[name], kind)
    check_database_settings(config)
    for name, minimum in THROTTLE_MINIMUMS.items():
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{name} must be a whole number of at least {minimum} "
                              f"(it is {value!r}).")
    for name, allowed in (("IDP_ENV", ("development", "production")),
                          ("IDP_MAIL_BACKEND", MAIL_BACKENDS),
                          ("IDP_SMS_BACKEND", SMS_BACKENDS),
                          ("IDP_SMTP_SECURITY", SMTP_SECURITY),
                          ("IDP_LOG_FORMAT", ("", "json", "text"))):
        if config[name] not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)} "
                              f"(it is {config[name]!r}).")
    if config["IDP_SMS_BACKEND"] == "webhook" and not (
        config["IDP_SMS_WEBHOOK_URL"] and config["IDP_SMS_WEBHOOK_SECRET"]
    ):
        raise ConfigError("IDP_SMS_BACKEND=webhook needs IDP_SMS_WEBHOOK_URL and "
                          "IDP_SMS_WEBHOOK_SECRET.")
    if config["IDP_SMS_BACKEND"] == "twilio" and not (
        config["IDP_TWILIO_ACCOUNT_SID"] and config["IDP_TWILIO_AUTH_TOKEN"]
        and (config["IDP_TWILIO_FROM_NUMBER"] or config["IDP_TWILIO_MESSAGING_SERVICE_SID"])
    ):
        raise ConfigError("IDP_SMS_BACKEND=twilio needs IDP_TWILIO_ACCOUNT_SID, "
                          "IDP_TWILIO_AUTH_TOKEN and IDP_TWILIO_FROM_NUMBER or "
                          "IDP_TWILIO_MESSAGING_SERVICE_SID.")
    if config["IDP_REDIS_URL"] and not config["IDP_REDIS_URL"].startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ConfigError("IDP_REDIS_URL must start with redis://, rediss:// or unix://.")
    jwks_cache = config["IDP_JWKS_CACHE_SECONDS"]
    if isinstance(jwks_cache, bool) or not isinstance(jwks_cache, int) or not (
        0 <= jwks_cache <= JWKS_MAX_AGE
    ):
        raise ConfigError(f"IDP_JWKS_CACHE_SECONDS must be a whole number from 0 to "
                          f"{JWKS_MAX_AGE} (it is {jwks_cache!r}).")
    check_range(config, "IDP_ARGON2_PARALLELISM", 1, 64)
    # argon2 needs 8 KiB per lane; 4 GiB is more than any worker should hold per sign-in.
    check_range(config, "IDP_ARGON2_MEMORY_KIB", 8 * config["IDP_ARGON2_PARALLELISM"],
                4 * 1024 * 1024)
    check_range(config, "IDP_ARGON2_TIME_COST", 1, 100)
    check_range(config, "IDP_CLIENT_JWKS_REFETCH_SECONDS", 1, 3600)
    check_range(config, "IDP_CLIENT_JWKS_CACHE_SECONDS", config["IDP_CLIENT_JWKS_REFETCH_SECONDS"],
                86400)
    check_range(config, "IDP_CLIENT_JWKS_TIMEOUT", 0.1, 30, kind=float)
    check_range(config, "IDP_BACKCHANNEL_TOTAL_TIMEOUT", 0.1, 60, kind=float)
    if config["IDP_REDIS_TIMEOUT"] <= 0:
        raise ConfigError("IDP_REDIS_TIMEOUT must be a number of seconds above 0 "
                          f"(it is {config['IDP_REDIS_TIMEOUT']!r}).")
    for name in ("IDP_SMS_WEBHOOK_URL", "IDP_TWILIO_BASE_URL"):
        if config[name] and not config[name].startswith(("https://", "http://")):
            raise ConfigError(f"{name} must start with https:// or http://.")


# The optional parts a setting needs: (setting, does this value need it, module, extra).
OPTIONAL_PARTS = [
    ("IDP_REDIS_URL", bool, "redis", "redis"),
    ("SQLALCHEMY_DATABASE_URI", lambda url: str(url).startswith("postgresql"), "psycopg",
     "postgres"),
]


def check_optional_parts(config: dict[str, Any]) -> None:
    """A setting whose library is not installed (an extra left out) stops the start with
    the command that installs it, not the first request with a traceback."""
    from importlib.util import find_spec

    for name, needs, module, extra in OPTIONAL_PARTS:
        value = config.get(name)
        if value and needs(value) and find_spec(module) is None:
            raise ConfigError(f"{name} needs the {module} package, which is not installed: "
                              f"pip install 'idp[{extra}]'.")


def check_production(config: dict[str, Any]) -> None:
    """Refuse to start a production configuration that is unsafe."""
    check_choices(config)
    if config["IDP_ENV"] != "production":
        return
    problems = []
    if config["IDP_DEV_OUTBOX"]:
        problems.append("IDP_DEV_OUTBOX must be off (the outbox shows every message sent)")
    if not config["IDP_SECRET_KEY"] or len(config["IDP_SECRET_KEY"]) < 32:
        problems.append("IDP_SECRET_KEY must be set to a random value of at least 32 characters")
    issuer = config["IDP_ISSUER"]
    if issuer.startswith("http://") and not _is_loopback_url(issuer):
        problems.append("IDP_ISSUER must use https:// (http is only allowed on loopback)")
    if config["IDP_MAIL_BACKEND"] == "outbox":
        problems.append("IDP_MAIL_BACKEND must be smtp (verification links and passcodes "
                        "must reach people), with IDP_SMTP_HOST and IDP_MAIL_FROM")
    elif config["IDP_MAIL_FROM"].lower().rstrip("> ").endswith("@localhost"):
        problems.append("IDP_MAIL_FROM must be an address people can recognise and reply to "
                        "(not @localhost)")
    if config["IDP_SMS_BACKEND"] == "outbox":
        problems.append("IDP_SMS_BACKEND must be webhook or twilio (SMS passcodes must reach "
                        "people)")
    if not config["IDP_ENCRYPTION_KEY"] or len(config["IDP_ENCRYPTION_KEY"]) < 32:
        problems.append("IDP_ENCRYPTION_KEY must be set to a random value of at least 32 "
                        "characters (it encrypts authentication-app secrets and signing keys)")
    if (config["IDP_MAIL_BACKEND"] == "smtp" and config["IDP_SMTP_SECURITY"] == "none"
            and not config["IDP_SMTP_ALLOW_PLAINTEXT"]):
        problems.append("IDP_SMTP_SECURITY must be starttls or tls (passcodes and links "
                        "must not cross the network in clear; IDP_SMTP_ALLOW_PLAINTEXT=1 "
                        "allows it, e.g. for a relay on the same host)")
    for backend, name in (("webhook", "IDP_SMS_WEBHOOK_URL"), ("twilio", "IDP_TWILIO_BASE_URL")):
        url = config[name]
        if (config["IDP_SMS_BACKEND"] == backend and url.startswith("http://")
                and not _is_loopback_url(url)):
            problems.append(f"{name} must use https:// (http is only allowed on loopback)")
    if not meets_owasp_minimum(config["IDP_ARGON2_MEMORY_KIB"], config["IDP_ARGON2_TIME_COST"],
                               config["IDP_ARGON2_PARALLELISM"]):
        profiles = ", ".join(f"{memory} KiB with {passes} pass{'es' if passes > 1 else ''}"
                             for memory, passes in OWASP_PROFILES)
        problems.append("IDP_ARGON2_MEMORY_KIB and IDP_ARGON2_TIME_COST must be at least one "
                        f"of OWASP's argon2id profiles ({profiles})")
    if config["IDP_METRICS_TOKEN"] and len(config["IDP_METRICS_TOKEN"]) < 32:
        problems.append("IDP_METRICS_TOKEN must be a random value of at least 32 characters")
    database = config.get("SQLALCHEMY_DATABASE_URI") or config["IDP_DATABASE_URL"] or "sqlite"
    workers = os.environ.get("GUNICORN_WORKERS") or os.environ.get("WEB_CONCURRENCY") or "1"
    if database.startswith("sqlite") and workers.isdigit() and int(workers) > 1:
        problems.append("SQLite serves one worker only: set IDP_DATABASE_URL to PostgreSQL "
                        f"or run one worker (GUNICORN_WORKERS/WEB_CONCURRENCY is {workers})")
    if problems:
        raise ConfigError("Unsafe production configuration: " + "; ".join(problems) + ".")


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host in {"localhost", "127.0.0.1", "::1"}
