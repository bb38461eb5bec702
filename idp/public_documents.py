"""Discovery and JWKS, answered in front of Flask once they are rendered.

The two documents every client library fetches most are the same bytes for everyone until
the configuration or the keys change: Flask renders them (``idp.oauth.routes``) and keeps
them (discovery for the life of the process, the JWKS for ``IDP_JWKS_CACHE_SECONDS``).
While a rendered copy is fresh, this WSGI layer answers ``GET`` for them itself, with
exactly the answer Flask would give (the security headers, ``X-Request-ID``, ``ETag``,
``Cache-Control``, CORS, ``304`` for a matching ``If-None-Match``) and the same request
metrics, without a request context, hooks or routing. Anything else, and these paths
before their first rendering or after the JWKS expired, goes to Flask, which renders them
again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask
from werkzeug.http import parse_etags

from idp import headers, logs, metrics
from idp.config import JWKS_MAX_AGE
from idp.oauth import keys

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks.json"
DISCOVERY_MAX_AGE = 300
#: Where ``idp.oauth.routes.discovery`` keeps the rendered document: (body, etag).
DISCOVERY_KEY = "idp.discovery"


def cache_headers(etag: str, max_age: int) -> list[tuple[str, str]]:
    """The headers of a public document, as Flask's view and this layer both send them:
    anyone may cache it (``max_age`` seconds) and read it from any origin."""
    return [("Cache-Control", f"public, max-age={max_age}"), ("ETag", f'"{etag}"'),
            ("Access-Control-Allow-Origin", "*")]


def _discovery(app: Flask) -> tuple[bytes, str] | None:
    return app.extensions.get(DISCOVERY_KEY)


def _jwks(app: Flask) -> tuple[bytes, str] | None:
    published = keys.fresh_published(app)
    return (published.body, published.etag) if published is not None else None


class PublicDocuments:
    """The WSGI layer (``app.wsgi_app = PublicDocuments(app, app.wsgi_app)``)."""

    def __init__(self, app: Flask, wsgi_app):
        self.app, self.wsgi_app = app, wsgi_app
        self.routes: dict[str, tuple[str, Callable, int]] = {
            DISCOVERY_PATH: ("oauth.discovery", _discovery, DISCOVERY_MAX_AGE),
            JWKS_PATH: ("oauth.jwks", _jwks, JWKS_MAX_AGE),
        }
        self.security = headers.document_headers(app.config["IDP_ENV"] == "production")

    def __call__(self, environ, start_response):
        route = (self.routes.get(environ.get("PATH_INFO", ""))
                 if environ.get("REQUEST_METHOD") == "GET" else None)
        document = route[1](self.app) if route is not None else None
        if document is None:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        endpoint, _, max_age = route
        body, etag = document
        answer = cache_headers(etag, max_age)
        given = environ.get("HTTP_IF_NONE_MATCH")
        if given and parse_etags(given).contains(etag):
            status, body = 304, b""  # no entity headers on a 304, as werkzeug sends it
        else:
            status = 200
            answer += [("Content-Type", "application/json"),
                       ("Content-Length", str(len(body)))]
        answer += self.security
        answer.append((logs.REQUEST_ID_HEADER, logs.request_id_of(environ)))
        start_response("304 NOT MODIFIED" if status == 304 else "200 OK", answer)
        metrics.observe(endpoint, status, time.perf_counter() - started)
        return [body]
