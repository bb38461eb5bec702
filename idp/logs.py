"""Logging: one JSON object per line in production (``IDP_LOG_FORMAT=json``), with the
request id that is also returned in the ``X-Request-ID`` response header.

Nothing secret is ever passed to a log call: no password, passcode, token, secret or full
phone number (the delivery service logs masked destinations only).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from datetime import UTC, datetime

from flask import Flask, g, has_request_context, request

from idp.request_hooks import request_hooks

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HANDLER_MARK = "_idp_handler"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def request_id_of(environ: dict) -> str:
    """The request's id: a valid incoming ``X-Request-ID`` (a load balancer's), else a new one."""
    given = environ.get("HTTP_X_REQUEST_ID", "")
    return given if _VALID_REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


def configure(app: Flask) -> None:
    """Install one handler on the root logger (once per process) and the request id."""
    root = logging.getLogger()
    root.setLevel(app.config["IDP_LOG_LEVEL"])
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, _HANDLER_MARK, True)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    if app.config["IDP_LOG_FORMAT"] == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))

    hooks = request_hooks(app)

    @hooks.before
    def assign_request_id():
        g.request_id = request_id_of(request.environ)

    @hooks.after
    def return_request_id(response):
        if "request_id" in g:
            response.headers[REQUEST_ID_HEADER] = g.request_id
        return response
