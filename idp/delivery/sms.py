"""Text messages: one small interface, three backends (outbox, signed webhook, Twilio)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

from flask import current_app

from idp.delivery.mail import TransportError
from idp.extensions import db
from idp.models import OutboxMessage


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _error_code(exc: urllib.error.HTTPError) -> str:
    """`` (code N)`` from a provider's JSON error body, if it has one. Only the number: the
    provider's message may repeat the phone number."""
    try:
        code = json.loads(exc.read(10_000)).get("code")
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        return ""
    finally:
        exc.close()
    return f" (code {code})" if isinstance(code, int) else ""


def _post(url: str, body: bytes, headers: dict[str, str], what: str) -> bytes:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise TransportError(f"{what} URL must start with https:// or http://")
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
    timeout = current_app.config["IDP_SMS_TIMEOUT"]
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.read(100_000)
    except urllib.error.HTTPError as exc:
        raise TransportError(f"{what} answered HTTP {exc.code}{_error_code(exc)}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        cause = getattr(exc, "reason", None)
        cause = cause if isinstance(cause, BaseException) else exc
        if isinstance(cause, TimeoutError):
            raise TransportError(f"{what} timed out after {timeout:g} s") from None
        raise TransportError(f"{what} unreachable: {type(cause).__name__}") from None


class OutboxSmsBackend:
    name = "outbox"

    def send(self, to: str, body: str, kind: str) -> None:
        db.session.add(OutboxMessage(channel="sms", recipient=to, text=body, kind=kind))


def webhook_signature(secret: str, raw_body: bytes) -> str:
    """``X-IDP-Signature`` value: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()


class WebhookSmsBackend:
    """POSTs ``{"to", "body"}`` as JSON to ``IDP_SMS_WEBHOOK_URL``, signed with HMAC."""

    name = "webhook"

    def send(self, to: str, body: str, kind: str) -> None:
        config = current_app.config
        raw = json.dumps({"to": to, "body": body}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-IDP-Signature": webhook_signature(config["IDP_SMS_WEBHOOK_SECRET"], raw),
        }
        _post(config["IDP_SMS_WEBHOOK_URL"], raw, headers, "SMS webhook")


class TwilioSmsBackend:
    """Twilio's Messages API: ``POST /2010-04-01/Accounts/{sid}/Messages.json``."""

    name = "twilio"

    def send(self, to: str, body: str, kind: str) -> None:
        config = current_app.config
        sid = config["IDP_TWILIO_ACCOUNT_SID"]
        url = (config["IDP_TWILIO_BASE_URL"].rstrip("/")
               + f"/2010-04-01/Accounts/{urllib.parse.quote(sid)}/Messages.json")
        fields = {"To": to, "Body": body}
        if config["IDP_TWILIO_MESSAGING_SERVICE_SID"]:
            fields["MessagingServiceSid"] = config["IDP_TWILIO_MESSAGING_SERVICE_SID"]
        else:
            fields["From"] = config["IDP_TWILIO_FROM_NUMBER"]
        credentials = base64.b64encode(f"{sid}:{config['IDP_TWILIO_AUTH_TOKEN']}".encode())
        headers = {"Authorization": "Basic " + credentials.decode(),
                   "Content-Type": "application/x-www-form-urlencoded"}
        raw = _post(url, urllib.parse.urlencode(fields).encode(), headers, "Twilio")
        try:
            status = json.loads(raw).get("status")
        except (ValueError, AttributeError):
            raise TransportError("Twilio answered something that is not JSON") from None
        if status in ("failed", "undelivered"):
            raise TransportError(f"Twilio refused the message ({status})")


SMS_BACKENDS = {"outbox": OutboxSmsBackend, "webhook": WebhookSmsBackend,
                "twilio": TwilioSmsBackend}
