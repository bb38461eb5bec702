"""What a client may register as its URIs: one rule for the command line and any other
place that registers or edits clients.

- Every URI is absolute, at most 2000 characters, without a fragment, white space or user
  credentials.
- Redirect and post-logout redirect URIs use ``https``, or ``http`` on loopback
  (``127.0.0.1``, ``[::1]``, ``localhost``; RFC 8252 §7.3), or a private-use scheme of a
  native app, a reverse domain name such as ``com.example.app:/callback`` (RFC 8252 §7.1).
- The back-channel logout URI and ``jwks_uri``, which the IdP itself calls, use ``https`` or
  ``http`` on loopback; in production they must also resolve to addresses the IdP may reach
  (see ``idp.outbound``), checked here and again at every request the IdP makes to them.

A URI that is not ``https`` (nor loopback, nor a native scheme) is refused in production and
accepted with a warning in development.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from idp.outbound import TargetPolicy, TargetRefused, check_target

MAX_LENGTH = 2000
LOOPBACK_HOSTS = frozenset({"localhost"})
# A private-use scheme: a reverse domain name, so with at least one dot (RFC 8252 §7.1).
NATIVE_SCHEME = re.compile(r"[a-z][a-z0-9+-]*(\.[a-z0-9+-]+)+", re.IGNORECASE)

REDIRECT_URIS = "redirect_uris"
POST_LOGOUT_REDIRECT_URIS = "post_logout_redirect_uris"
BACKCHANNEL_LOGOUT_URI = "backchannel_logout_uri"
JWKS_URI = "jwks_uri"
# Fields a browser is sent to (native schemes allowed) and fields the IdP calls itself.
BROWSER_FIELDS = (REDIRECT_URIS, POST_LOGOUT_REDIRECT_URIS)
OUTBOUND_FIELDS = (BACKCHANNEL_LOGOUT_URI, JWKS_URI)


class UriRefused(ValueError):
    """A URI the rules refuse; ``field`` is the client attribute it was given for."""

    def __init__(self, field: str, uri: str, reason: str):
        super().__init__(f"{uri!r} {reason}")
        self.field, self.uri, self.reason = field, uri, reason


@dataclass(frozen=True)
class UriRules:
    production: bool
    targets: TargetPolicy

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UriRules:
        return cls(production=config.get("IDP_ENV") == "production",
                   targets=TargetPolicy.from_config(config))


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_uri(uri: str, field: str, rules: UriRules) -> str | None:
    """Check one URI registered as ``field``; raise :class:`UriRefused`, or return a
    warning to show (development only), or None."""
    if (not isinstance(uri, str) or not uri or len(uri) > MAX_LENGTH
            or any(c.isspace() or not c.isprintable() for c in uri)):
        raise UriRefused(field, str(uri)[:100], f"must be an absolute URI of at most "
                         f"{MAX_LENGTH} characters, without spaces")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise UriRefused(field, uri, "is not a valid URI") from None
    if parts.fragment or "#" in uri:
        raise UriRefused(field, uri, "must not have a fragment")
    if parts.username is not None or parts.password is not None:
        raise UriRefused(field, uri, "must not hold user credentials")
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme not in ("http", "https"):
        native = field in BROWSER_FIELDS and NATIVE_SCHEME.fullmatch(scheme)
        if native and (parts.path or parts.netloc):
            return None
        also = (", or a private-use scheme of a native app such as "
                "com.example.app:/callback" if field in BROWSER_FIELDS else "")
        raise UriRefused(field, uri, f"must be an absolute https URI (http only on loopback"
                         f"{also})")
    host = parts.hostname
    if not host:
        raise UriRefused(field, uri, "must name a host")
    warning = None
    if scheme == "http" and not is_loopback_host(host):
        reason = ("uses http: only https is allowed (http only on loopback: 127.0.0.1, "
                  "[::1], localhost)")
        if rules.production:
            raise UriRefused(field, uri, reason)
        warning = f"{uri!r} {reason}; production (IDP_ENV=production) refuses it"
    if field in OUTBOUND_FIELDS and rules.targets.enforced:
        try:
            check_target(host, port or (443 if scheme == "https" else 80), rules.targets)
        except TargetRefused as exc:
            raise UriRefused(field, uri, f"is refused: {exc}") from None
        except OSError:
            raise UriRefused(field, uri, f"is refused: {host} does not resolve") from None
    return warning


def check_client_uris(client: Any, config: Mapping[str, Any]) -> list[str]:
    """Check every URI of ``client`` (a model or anything with its attributes) under the
    rules of ``config``; raise :class:`UriRefused` for the first one refused, else return
    the warnings (development)."""
    rules = UriRules.from_config(config)
    warnings = []
    for field in (*BROWSER_FIELDS, *OUTBOUND_FIELDS):
        value = getattr(client, field, None)
        for uri in ([value] if isinstance(value, str) else value or []):
            warning = check_uri(uri, field, rules)
            if warning:
                warnings.append(warning)
    return warnings
