"""Configuration from ``IDP_*`` environment variables.

Every setting has a documented default (see README.md). Values are read once, when the
application is created; tests pass overrides to ``create_app(test_config)``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

# name -> (default, cast). Defaults are for the embedded development setup.
SETTINGS: dict[str, tuple[Any, type]] = {
    "IDP_ENV": ("development", str),
    "IDP_SECRET_KEY": ("", str),
    "IDP_ISSUER": ("http://127.0.0.1:5000", str),
    "IDP_DATABASE_URL": ("", str),
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
    "IDP_CLIENT_ASSERTION_LEEWAY": (60, int),
    "IDP_LOG_LEVEL": ("INFO", str),
}


def _cast(value: str, kind: type) -> Any:
    if kind is bool:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return kind(value)


def load_settings(extra: dict[str, tuple[Any, type]] | None = None,
                  environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Return every ``IDP_*`` setting (the core's and ``extra``, e.g. a plugin's
    ``default_config``), the environment first, then the default."""
    environ = os.environ if environ is None else environ
    specs = {**(extra or {}), **SETTINGS}
    out: dict[str, Any] = {}
    for name, (default, kind) in specs.items():
        raw = environ.get(name)
        out[name] = default if raw in (None, "") else _cast(raw, kind)
    return out


class ConfigError(RuntimeError):
    """Raised when the configuration is unsafe or incomplete; the message says what to fix."""


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


def check_production(config: dict[str, Any]) -> None:
    """Refuse to start a production configuration that is unsafe."""
    if config["IDP_ENV"] != "production":
        return
    problems = []
    if not config["IDP_SECRET_KEY"] or len(config["IDP_SECRET_KEY"]) < 32:
        problems.append("IDP_SECRET_KEY must be set to a random value of at least 32 characters")
    issuer = config["IDP_ISSUER"]
    if issuer.startswith("http://") and not _is_loopback_url(issuer):
        problems.append("IDP_ISSUER must use https:// (http is only allowed on loopback)")
    if problems:
        raise ConfigError("Unsafe production configuration: " + "; ".join(problems) + ".")


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host in {"localhost", "127.0.0.1", "::1"}
