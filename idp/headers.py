"""Security headers on every response of the IdP.

- ``Content-Security-Policy``: scripts, styles and everything else only from the IdP itself
  (no inline script or style: the pages have none), no plugins, no ``<base>``, no framing.
  ``form-action`` allows the IdP and, on a page that belongs to a client's sign-in or
  logout, the origins of that client's registered redirect and post-logout URIs: the
  ``form_post`` answer posts there, and browsers also check the redirects that follow a
  form (the sign-in form's answer may send the browser back to the client). A page belongs
  to the clients the request read with ``find_client`` and the ``client`` its template
  was given (the panel beside the form shows it).
- ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``.
- ``Strict-Transport-Security`` in production only (``IDP_ENV=production``).

A view may set its own value of any of them; it is then left alone. The values are built
once per application; per response the hook only adds them (and, for an HTML page that
read a client, that client's origins).
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

from flask import Flask, Response, g, template_rendered

from idp.request_hooks import request_hooks

CSP = "Content-Security-Policy"
HSTS_VALUE = "max-age=31536000; includeSubDomains"
BASE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
               "form-action 'self'")
# What may appear in a CSP source built from a registered URI (anything else is left out).
_SOURCE = re.compile(r"[a-z][a-z0-9+.-]*:(//[A-Za-z0-9.\-\[\]:]+)?")


def fixed_headers(production: bool) -> list[tuple[str, str]]:
    """The headers every response carries, whatever it is."""
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    ]
    if production:
        headers.append(("Strict-Transport-Security", HSTS_VALUE))
    return headers


@functools.lru_cache(maxsize=512)
def form_sources(uris: tuple[str, ...]) -> str:
    """CSP sources for the origins of ``uris``: ``https://rp.example:8443``, or
    ``com.example.app:`` for a private-use scheme."""
    sources = []
    for uri in uris:
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError:
            continue
        if parts.scheme in ("http", "https"):
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            source = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
        else:
            source = f"{parts.scheme}:"
        if _SOURCE.fullmatch(source) and source not in sources:
            sources.append(source)
    return " ".join(sources)


def document_headers(production: bool) -> list[tuple[str, str]]:
    """The security headers of a response that is not an HTML page (a JSON document)."""
    return [*fixed_headers(production), (CSP, BASE_POLICY)]


class SecurityHeaders:
    """The ``after_request`` hook (one per application, values built once)."""

    def __init__(self, production: bool):
        self.fixed = [(name.lower(), name, value) for name, value in fixed_headers(production)]
        self.policy = BASE_POLICY

    def __call__(self, response: Response) -> Response:
        # A header a view set itself is kept; the others are added (one pass over the
        # response's headers, then one append each).
        headers = response.headers
        present = {name.lower() for name, _ in headers}
        for lowered, name, value in self.fixed:
            if lowered not in present:
                headers.add(name, value)
        if "content-security-policy" not in present:
            headers.add(CSP, self.policy_for(response))
        return response

    def policy_for(self, response: Response) -> str:
        if response.mimetype != "text/html":
            return self.policy
        clients = [*(g.get("idp_clients") or {}).values(), *g.get(_PAGE_CLIENTS, ())]
        if not any(clients):
            return self.policy
        uris: list[str] = []
        for client in clients:
            if client is not None:
                uris += client.redirect_uris or []
                uris += client.post_logout_redirect_uris or []
        extra = form_sources(tuple(uris))
        return f"{self.policy} {extra}" if extra else self.policy


_PAGE_CLIENTS = "idp_page_clients"


def _note_page_client(_app, template, context, **_extra) -> None:
    client = context.get("client")
    if client is not None and hasattr(client, "redirect_uris"):
        g.setdefault(_PAGE_CLIENTS, []).append(client)


def init_app(app: Flask) -> None:
    request_hooks(app).after(SecurityHeaders(app.config["IDP_ENV"] == "production"))
    template_rendered.connect(_note_page_client, app)
