"""Prometheus metrics, served at ``/metrics``.

Every metric is named ``idp_*`` and carries only labels from small fixed sets (an endpoint
name, a result, a grant type): never a user name, an address, a phone number, a client id or
a raw path. The functions below are what the rest of the code calls; a plugin may define
metrics of its own with ``prometheus_client`` (the MFA plugin does).

Under gunicorn (several worker processes) the values live in files in
``PROMETHEUS_MULTIPROC_DIR`` (``gunicorn.conf.py`` prepares it before the workers start) and
``/metrics`` adds up every worker's; without that variable the process's own registry is
served.

``/metrics`` asks for ``Authorization: Bearer <IDP_METRICS_TOKEN>`` when the token is set
(401 without it). Without a token it is served openly in development and not at all in
production (404).
"""

from __future__ import annotations

import hmac
import os
import time

from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from idp.request_hooks import request_hooks

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# 1 ms to 5 s: the JSON endpoints answer in milliseconds, a password check takes ~100 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Endpoints left out of the request metrics: scrapes and liveness probes.
UNTIMED_ENDPOINTS = frozenset({"metrics", "healthz"})
UNMATCHED = "unmatched"  # no route (404, 405): the raw path is never a label

SIGN_IN_RESULTS = ("accepted", "rejected", "unknown_user", "disabled", "throttled",
                   "unavailable")
GRANT_TYPES = frozenset({"authorization_code", "refresh_token", "client_credentials"})
TOKEN_ERRORS = frozenset({"invalid_request", "invalid_client", "invalid_grant",
                          "unauthorized_client", "unsupported_grant_type", "invalid_scope",
                          "server_error"})
DELIVERY_RESULTS = frozenset({"sent", "failed", "throttled", "invalid", "unavailable"})

REQUEST_DURATION = Histogram(
    "idp_request_duration_seconds",
    "Time to answer a request, by Flask endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
RESPONSES = Counter(
    "idp_http_responses_total",
    "Responses by Flask endpoint and status class (2xx, 3xx, 4xx, 5xx).",
    ["endpoint", "status"],
)
SIGN_INS = Counter(
    "idp_sign_ins_total",
    "Password sign-in attempts by result: accepted, rejected (wrong password), "
    "unknown_user, disabled (right password, disabled account), throttled.",
    ["result"],
)
TOKEN_GRANTS = Counter(
    "idp_token_grants_total",
    "Token endpoint requests by grant type and result (success or the OAuth error code).",
    ["grant_type", "result"],
)
DELIVERIES = Counter(
    "idp_delivery_messages_total",
    "Messages by channel (email, sms), kind (passcode, link, notice) and result "
    "(sent, failed, throttled, invalid).",
    ["channel", "kind", "result"],
)
THROTTLE_HITS = Counter(
    "idp_throttle_hits_total",
    "Events refused by a rate limit, by the limit's name.",
    ["limit"],
)

for _result in SIGN_IN_RESULTS:
    SIGN_INS.labels(_result)

_START = "idp.metrics.start"
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
# Label children by endpoint (and status class), so a request costs two dict lookups.
_durations: dict[str, object] = {}
_responses: dict[tuple[str, int], object] = {}


# --- what the rest of the code calls ---------------------------------------------------------


def sign_in(result: str) -> None:
    """A password attempt: one of ``SIGN_IN_RESULTS``."""
    SIGN_INS.labels(result if result in SIGN_IN_RESULTS else "rejected").inc()


def token_grant(grant_type: str | None, result: str) -> None:
    """A token request: ``success`` or its OAuth error code."""
    grant = grant_type if grant_type in GRANT_TYPES else "other"
    if result != "success" and result not in TOKEN_ERRORS:
        result = "other"
    TOKEN_GRANTS.labels(grant, result).inc()


def delivery(channel: str, kind: str, result: str) -> None:
    """A message: ``sent``, ``failed`` (the provider did not take it), ``throttled``,
    ``invalid`` (the destination cannot be used) or ``unavailable`` (its limits could not be
    counted)."""
    DELIVERIES.labels(channel, kind, result if result in DELIVERY_RESULTS else "failed").inc()


def throttle_hit(limit_name: str) -> None:
    """A rate limit refused an event (``limit_name`` is the limit's fixed name)."""
    THROTTLE_HITS.labels(limit_name).inc()


# --- request timing --------------------------------------------------------------------------


def _start_timer() -> None:
    request.environ[_START] = time.perf_counter()


def _observe(response):
    started = request.environ.get(_START)
    if started is None:
        return response
    endpoint = request.endpoint or UNMATCHED
    if endpoint not in UNTIMED_ENDPOINTS:
        observe(endpoint, response.status_code, time.perf_counter() - started)
    return response


def observe(endpoint: str, status: int, elapsed: float) -> None:
    """One answer of ``endpoint``: its duration and its status class."""
    child = _durations.get(endpoint)
    if child is None:
        child = _durations[endpoint] = REQUEST_DURATION.labels(endpoint)
    child.observe(elapsed)
    key = (endpoint, status // 100)
    counter = _responses.get(key)
    if counter is None:
        counter = _responses[key] = RESPONSES.labels(endpoint,
                                                     _STATUS_CLASSES.get(key[1], "other"))
    counter.inc()


# --- exposition ------------------------------------------------------------------------------


def registry() -> CollectorRegistry:
    """Every worker's values under gunicorn (multiprocess mode), else this process's."""
    if os.environ.get(MULTIPROC_ENV):
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
        return collected
    return REGISTRY


def exposition() -> bytes:
    return generate_latest(registry())


def _authorized(token: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def metrics_view():
    token = current_app.config["IDP_METRICS_TOKEN"]
    if token and not _authorized(token):
        return Response("A bearer token is required.\n", status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"',
                                 "Cache-Control": "no-store"},
                        mimetype="text/plain")
    return Response(exposition(), content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    """Time every request and serve ``/metrics`` (unless production without a token)."""
    hooks = request_hooks(app)
    hooks.before(_start_timer)
    hooks.after(_observe)
    if app.config["IDP_METRICS_TOKEN"] or app.config["IDP_ENV"] != "production":
        app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics_view,
                         methods=["GET"])
