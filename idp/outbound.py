"""Requests the IdP itself makes to addresses that clients registered (back-channel logout
URIs, ``jwks_uri``), guarded against being turned on the IdP's own network.

In production a target must resolve only to public addresses: loopback, private ranges
(RFC 1918, unique-local IPv6, shared address space) are refused unless
``IDP_ALLOW_PRIVATE_NETWORK_TARGETS=1``; link-local addresses (169.254/16, fe80::/10) and the
cloud metadata services are refused always. The check runs when a client is registered and
again at every connection, on the addresses the connection then uses (DNS can change in
between): the socket is opened to the very address that was checked. In development every
target is allowed.

Use :func:`opener` for urllib requests::

    opener = outbound.opener(current_app.config, NoRedirect)
    with opener.open(request, timeout=3) as response: ...

The policy is read from the configuration when the opener is built, so the opener may be
used from threads that have no application context. Environment proxies are not used: the
connection must go to the address that was checked.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Cloud instance metadata services, refused even where private networks are allowed.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, Azure, Google Cloud, OpenStack, DigitalOcean
    "169.254.170.2",    # AWS ECS task metadata
    "fd00:ec2::254",    # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud
))

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(OSError):
    """The target resolves to an address this IdP must not connect to."""


@dataclass(frozen=True)
class TargetPolicy:
    """Which addresses outbound requests may reach."""

    enforced: bool = True
    allow_private: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TargetPolicy:
        return cls(enforced=config.get("IDP_ENV") == "production",
                   allow_private=bool(config.get("IDP_ALLOW_PRIVATE_NETWORK_TARGETS")))

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        if not self.enforced:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_multicast or address.is_unspecified:
            return "not a unicast address"
        if address.is_global or self.allow_private:
            return None
        if address.is_loopback:
            return "a loopback address (IDP_ALLOW_PRIVATE_NETWORK_TARGETS=1 allows it)"
        return "a private network address (IDP_ALLOW_PRIVATE_NETWORK_TARGETS=1 allows it)"

    def resolve(self, host: str, port: int) -> list[tuple]:
        """The addresses to connect to for ``host``; raises :class:`TargetRefused` when any
        of them is refused (a name that also resolves to an internal address is refused as
        a whole), ``OSError`` when the name does not resolve."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            reason = self.refusal(address)
            if reason is not None:
                raise TargetRefused(f"{host} resolves to {address}, {reason}")
        return infos

    def connect(self, host: str, port: int, timeout: float | None = None,
                source_address: tuple | None = None) -> socket.socket:
        """A connected socket to an allowed address of ``host`` (what
        ``socket.create_connection`` does, after the check)."""
        if not self.enforced:
            return socket.create_connection((host, port), timeout, source_address)
        error: OSError | None = None
        for family, kind, proto, _name, address in self.resolve(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"{host} has no address")


def check_target(host: str, port: int, policy: TargetPolicy) -> None:
    """Raise :class:`TargetRefused` (or ``OSError`` when ``host`` does not resolve) unless
    every address of ``host`` may be reached under ``policy``."""
    if policy.enforced:
        policy.resolve(host, port)


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, policy: TargetPolicy, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_connect, policy)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, policy: TargetPolicy, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_connect, policy)


def _connect(policy: TargetPolicy, address: tuple, timeout=None, source_address=None):
    host, port = address
    return policy.connect(host, port, timeout, source_address)


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: TargetPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPConnection, policy=self.policy), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: TargetPolicy):
        super().__init__()
        self.policy = policy

    def https_open(self, req):
        return self.do_open(functools.partial(_GuardedHTTPSConnection, policy=self.policy),
                            req, context=self._context)


def opener(config: Mapping[str, Any], *handlers) -> urllib.request.OpenerDirector:
    """A urllib opener whose connections follow the target policy of ``config`` (extra
    ``handlers``, e.g. one that refuses redirects, are added as ``build_opener`` does)."""
    policy = TargetPolicy.from_config(config)
    return urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                       _GuardedHTTPHandler(policy),
                                       _GuardedHTTPSHandler(policy), *handlers)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is the answer, never followed (it could point anywhere)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None
