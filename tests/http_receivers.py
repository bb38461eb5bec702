"""Local HTTP servers that stand in for message providers in tests.

- :class:`WebhookReceiver` records every request (method, path, headers, raw body) and answers
  with a configurable status, body, headers and delay, or drops the connection.
- :class:`TwilioFake` speaks the HTTP shape of Twilio's Messages API: Basic authentication,
  ``POST /2010-04-01/Accounts/{sid}/Messages.json`` with a form body, ``201`` and a Message
  resource on success, Twilio's JSON errors otherwise.

Both listen on 127.0.0.1 on a free port, serve from a daemon thread, and are stopped by
``stop()`` (or the finalizer that :meth:`started` registers). Every wait is bounded.

Use them from a test module with a fixture::

    @pytest.fixture
    def receiver(request):
        return WebhookReceiver.started(request)

    @pytest.fixture
    def twilio(request):
        return TwilioFake.started(request)  # random account SID and auth token

``free_port()`` gives an address where a connection is refused.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

MAX_BODY = 1_000_000
STOP_TIMEOUT = 5.0


@dataclass
class RecordedRequest:
    """One request as it arrived."""

    method: str
    path: str
    headers: Message
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The form-encoded body; a field given twice is an error."""
        fields = parse_qs(self.body.decode(), keep_blank_values=True, strict_parsing=True)
        assert all(len(v) == 1 for v in fields.values()), fields
        return {k: v[0] for k, v in fields.items()}


def free_port() -> int:
    """A port nothing listens on (a connection to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        # A client that gave up (timeout) closes the socket under a slow answer: not an error
        # of the server under test.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: LocalHttpServer

    def log_message(self, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_BODY)) if length > 0 else b""
        recorded = RecordedRequest(self.command, self.path, self.headers, body)
        self.owner._record(recorded)
        self.owner.answer(self, recorded)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class LocalHttpServer:
    """A server on 127.0.0.1 that records requests; subclasses decide the answer."""

    def __init__(self):
        self.requests: list[RecordedRequest] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @classmethod
    def started(cls, request: pytest.FixtureRequest, *args, **kwargs):
        """Start a server that the test's finalizer stops."""
        server = cls(*args, **kwargs)
        request.addfinalizer(server.stop)
        return server

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _record(self, recorded: RecordedRequest) -> None:
        with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait (at most ``timeout`` seconds) until ``count`` requests arrived; return them."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def pause(self, seconds: float) -> None:
        """Sleep in a handler, cut short when the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def answer(self, handler: _Handler, recorded: RecordedRequest) -> None:
        raise NotImplementedError

    @staticmethod
    def send(handler: _Handler, status: int, body: bytes = b"",
             headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True


class WebhookReceiver(LocalHttpServer):
    """Records requests and answers ``status`` with ``body`` after ``delay`` seconds.

    ``drop=True`` closes the connection without any answer; ``raw`` bytes are written
    instead of an HTTP answer (e.g. something that is not HTTP at all).
    """

    def __init__(self, status: int = 200, body: bytes = b"{}",
                 headers: dict[str, str] | None = None, delay: float = 0.0,
                 drop: bool = False, raw: bytes | None = None):
        self.respond(status, body, headers, delay, drop, raw)
        super().__init__()

    def respond(self, status: int = 200, body: bytes = b"{}",
                headers: dict[str, str] | None = None, delay: float = 0.0,
                drop: bool = False, raw: bytes | None = None) -> None:
        self.status, self.body, self.delay, self.drop, self.raw = status, body, delay, drop, raw
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def answer(self, handler, recorded):
        self.pause(self.delay)
        handler.close_connection = True
        if self.drop or self._stopping.is_set():
            return
        if self.raw is not None:
            handler.wfile.write(self.raw)
            return
        self.send(handler, self.status, self.body, self.headers)


# Twilio's error answers: (HTTP status, code, message).
TWILIO_ERRORS = {
    "invalid_to": (400, 21211, "The 'To' number {to} is not a valid phone number."),
    "to_required": (400, 21604, "A 'To' phone number is required."),
    "body_required": (400, 21602, "Message body is required."),
    "from_required": (400, 21603, "A 'From' phone number is required."),
    "unauthorized": (401, 20003, "Authenticate"),
    "not_found": (404, 20404, "The requested resource {path} was not found"),
    "unsupported_media": (415, 20415, "Unsupported Media Type"),
    "too_many_requests": (429, 20429, "Too Many Requests"),
    "server_error": (500, 20500, "Internal Server Error"),
    "unavailable": (503, 20503, "Service Unavailable"),
}


class TwilioFake(LocalHttpServer):
    """Twilio's Messages API, as far as sending a text goes.

    ``fail_with`` is a key of :data:`TWILIO_ERRORS` answered to every valid request, or
    ``"status_failed"`` (``201`` with a message whose status is ``failed``). ``delay`` holds
    the answer back. Accepted messages are in ``messages``.
    """

    API_VERSION = "2010-04-01"

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None,
                 fail_with: str | None = None, delay: float = 0.0):
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.fail_with, self.delay = fail_with, delay
        self.messages: list[dict[str, Any]] = []
        super().__init__()

    @property
    def messages_path(self) -> str:
        return f"/{self.API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    def _authorized(self, headers: Message) -> bool:
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except ValueError:
            return False
        return secrets.compare_digest(decoded, f"{self.account_sid}:{self.auth_token}")

    def _error(self, handler, key: str, **values) -> None:
        status, code, message = TWILIO_ERRORS[key]
        body = {"code": code, "message": message.format(**values),
                "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
        headers = {"Content-Type": "application/json"}
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        self.send(handler, status, json.dumps(body).encode(), headers)

    def answer(self, handler, recorded):
        self.pause(self.delay)
        if self._stopping.is_set():
            handler.close_connection = True
            return
        if not self._authorized(recorded.headers):
            return self._error(handler, "unauthorized")
        if recorded.method != "POST" or recorded.path != self.messages_path:
            return self._error(handler, "not_found", path=recorded.path)
        content_type = (recorded.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/x-www-form-urlencoded":
            return self._error(handler, "unsupported_media")
        try:
            form = recorded.form()
        except (ValueError, AssertionError, UnicodeDecodeError):
            return self._error(handler, "body_required")
        to = form.get("To", "")
        if not to:
            return self._error(handler, "to_required")
        if not form.get("Body"):
            return self._error(handler, "body_required")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self._error(handler, "from_required")
        if self.fail_with in TWILIO_ERRORS:
            return self._error(handler, self.fail_with, to=to, path=recorded.path)
        if not (to.startswith("+1") and len(to) == 12 and to[1:].isdigit()):
            return self._error(handler, "invalid_to", to=to)
        self.send(handler, 201, json.dumps(self._message(form)).encode(),
                  {"Content-Type": "application/json"})

    def _message(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        service = form.get("MessagingServiceSid")
        status = "failed" if self.fail_with == "status_failed" else (
            "accepted" if service and not form.get("From") else "queued")
        now = formatdate(usegmt=True)
        message = {
            "account_sid": self.account_sid,
            "api_version": self.API_VERSION,
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": 30007 if status == "failed" else None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": f"/{self.API_VERSION}/Accounts/{self.account_sid}"
                                          f"/Messages/{sid}/Media.json"},
            "to": form["To"],
            "uri": f"/{self.API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self.messages.append(message)
        return message

