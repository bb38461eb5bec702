"""Message delivery: email and SMS through pluggable backends, with shared send throttles.

Callers (the MFA plugin, account emails) use :func:`send_email` and :func:`send_sms`. Both
commit the current transaction: commit your own changes first, so that a failed send never
takes the user's progress with it. A failure raises :class:`DeliveryError`, whose
``user_message`` tells the user what to do; the failure is in the audit log and the message
is never retried (no duplicates).

Kinds of message and the throttles they meet:

- ``passcode``: at least ``IDP_PASSCODE_RESEND_SECONDS`` between sends to one destination and
  ``IDP_SEND_LIMIT_PER_ACCOUNT`` per ``IDP_SEND_LIMIT_WINDOW`` per account;
- ``link`` (verification links): the interval per destination, ``IDP_LINK_LIMIT_PER_ACCOUNT``
  per ``IDP_LINK_LIMIT_WINDOW`` per account and ``IDP_LINK_LIMIT_GLOBAL_PER_HOUR`` in all;
- ``notice`` (security notices): no passcode limit.

Every SMS also counts against ``IDP_SMS_LIMIT_PER_PHONE`` per 24 hours and the global
``IDP_SMS_LIMIT_GLOBAL_PER_HOUR`` breaker, which stops SMS (email keeps working). A refused
send counts against nothing; a send the provider did not take is taken back from the interval
and the account's passcodes (the user may retry at once) but still counts for the SMS limits.
While the limits cannot be counted (``IDP_REDIS_URL`` set and Redis not answering), every
throttled message is refused with :class:`ThrottledError` (reason ``throttled:unavailable``);
email notices, which no limit counts, still go out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from flask import current_app, render_template

from idp import audit, metrics, ratelimit
from idp.delivery.mail import MAIL_BACKENDS, TransportError, build_message, render_email
from idp.delivery.phone import PhoneNumberError, mask_email, mask_phone, normalize_us_phone
from idp.delivery.sms import SMS_BACKENDS
from idp.extensions import db

log = logging.getLogger(__name__)

KINDS = ("passcode", "link", "notice")

__all__ = ["DeliveryError", "PhoneNumberError", "ThrottledError", "mask_email", "mask_phone",
           "normalize_us_phone", "send_email", "send_sms"]


class DeliveryError(Exception):
    """A message was not sent. ``user_message`` is safe to show; ``reason`` is for logs."""

    def __init__(self, user_message: str, reason: str, retry_after: int | None = None):
        super().__init__(reason)
        self.user_message, self.reason, self.retry_after = user_message, reason, retry_after


class ThrottledError(DeliveryError):
    """A send throttle refused the message; ``retry_after`` says when it allows again."""


def _base_context(client=None) -> dict[str, Any]:
    config = current_app.config
    return {
        "brand": config["IDP_BRAND_NAME"],
        "app_name": client.label if client is not None else None,
        "support": (client.help_contact if client is not None and client.help_contact
                    else config["IDP_SUPPORT_CONTACT"]),
        "passcode_minutes": 5,
    }


def _destination_key(destination: str) -> str:
    """A keyed digest of a destination: rate-limit keys never show an address or a number
    (a plain hash of a phone number is easily reversed)."""
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, destination.strip().lower().encode(), hashlib.sha256).hexdigest()


def _limits(channel: str, destination: str, kind: str, user_id: int | None):
    config = current_app.config
    dest = _destination_key(destination)
    limits = []
    if kind in ("passcode", "link"):
        limits.append(ratelimit.Limit("destination", f"{kind}:dest:{dest}", 1,
                                      config["IDP_PASSCODE_RESEND_SECONDS"]))
    if kind == "passcode" and user_id is not None:
        limits.append(ratelimit.Limit("account", f"passcode:account:{user_id}",
                                      config["IDP_SEND_LIMIT_PER_ACCOUNT"],
                                      config["IDP_SEND_LIMIT_WINDOW"]))
    if kind == "link":
        if user_id is not None:
            limits.append(ratelimit.Limit("link_account", f"link:account:{user_id}",
                                          config["IDP_LINK_LIMIT_PER_ACCOUNT"],
                                          config["IDP_LINK_LIMIT_WINDOW"]))
        limits.append(ratelimit.Limit("link_global", "link:global",
                                      config["IDP_LINK_LIMIT_GLOBAL_PER_HOUR"], 3600))
    if channel == "sms":
        limits.append(ratelimit.Limit("phone", f"sms:phone:{dest}",
                                      config["IDP_SMS_LIMIT_PER_PHONE"], 24 * 3600))
        limits.append(ratelimit.Limit("global", "sms:global",
                                      config["IDP_SMS_LIMIT_GLOBAL_PER_HOUR"], 3600))
    return limits


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _throttle_message(limit_name: str, channel: str, kind: str, masked: str,
                      retry_after: int) -> str:
    if limit_name == "destination":
        what = "A code" if kind == "passcode" else "A link"
        return (f"{what} was sent to {masked} less than "
                f"{current_app.config['IDP_PASSCODE_RESEND_SECONDS']} seconds ago and is still "
                f"valid. Wait {_plural(retry_after, 'second')} before asking for another.")
    if limit_name == "account":
        minutes = max(1, (retry_after + 59) // 60)
        return (f"Too many codes were sent for your account. Try again in "
                f"{_plural(minutes, 'minute')}, or use another method.")
    if limit_name == "link_account":
        minutes = max(1, (retry_after + 59) // 60)
        return (f"Too many verification links were sent for your account. Try again in "
                f"{_plural(minutes, 'minute')}. The last link sent still works.")
    if limit_name == "link_global":
        return ("Verification links can't be sent right now. Try again later; nothing you "
                "have done so far is lost.")
    if limit_name == "phone":
        hours = max(1, (retry_after + 3599) // 3600)
        return ("Too many text messages were sent to this number today. Try again in "
                f"{_plural(hours, 'hour')}, or use another method, such as email.")
    return "Text messages are unavailable right now. Use another method, such as email."


def _check_throttles(channel: str, destination: str, masked: str, kind: str,
                     user_id: int | None) -> tuple[list[ratelimit.Limit], float]:
    """Count this send against its throttles (committed), or raise ThrottledError.

    Returns the limits and the time the send was counted at, so a failed send can be
    taken back."""
    limits = _limits(channel, destination, kind, user_id)
    at = time.time()
    try:
        refused = ratelimit.hit(limits, at)
    except ratelimit.RateLimitUnavailable as exc:
        # Fail closed: nothing is sent while the send limits cannot be counted.
        db.session.rollback()
        metrics.delivery(channel, kind, "unavailable")
        what = "the email" if channel == "email" else "the text message"
        raise ThrottledError(
            f"We can't send {what} right now. Try again in a minute; nothing you have done "
            "so far is lost.", "throttled:unavailable", exc.retry_after) from None
    if refused is None:
        # Committed before the send: a parallel request (any instance) sees the count, and no
        # transaction (nor the row locks it holds) stays open across the network call.
        db.session.commit()
        return limits, at
    limit, retry_after = refused
    db.session.rollback()
    if limit.name == "global":
        log.critical("SMS stopped: the global limit of %s messages per hour is reached",
                     current_app.config["IDP_SMS_LIMIT_GLOBAL_PER_HOUR"])
    audit.record("delivery_throttled", user_id=user_id, channel=channel, kind=kind,
                 limit=limit.name, to=masked, retry_after=retry_after)
    db.session.commit()
    metrics.delivery(channel, kind, "throttled")
    raise ThrottledError(_throttle_message(limit.name, channel, kind, masked, retry_after),
                         f"throttled:{limit.name}", retry_after)


def _failed(channel: str, kind: str, masked: str, user_id: int | None, backend: str,
            exc: TransportError, counted: tuple[list[ratelimit.Limit], float]) -> DeliveryError:
    db.session.rollback()
    # Nothing reached the user: the send does not hold back their retry (the interval to
    # the destination, the account's passcodes). The SMS limits keep counting it.
    limits, at = counted
    ratelimit.forget([limit for limit in limits if limit.name in ("destination", "account",
                                                              "link_account")], at)
    log.warning("%s %s to %s failed via %s: %s", channel, kind, masked, backend, exc)
    audit.record("delivery_failed", user_id=user_id, channel=channel, kind=kind, to=masked,
                 backend=backend, error=str(exc))
    db.session.commit()
    metrics.delivery(channel, kind, "failed")
    what = "the email" if channel == "email" else "the text message"
    return DeliveryError(
        f"We couldn't send {what} just now. Try again in a moment, or choose another "
        "method. Nothing you have done so far is lost.",
        f"transport:{exc}",
    )


def _sent(channel: str, kind: str, masked: str, user_id: int | None, backend: str) -> None:
    audit.record("delivery_sent", user_id=user_id, channel=channel, kind=kind, to=masked,
                 backend=backend)
    db.session.commit()  # the message is gone: its record must not depend on the page
    metrics.delivery(channel, kind, "sent")


def send_email(to: str, template: str, context: dict[str, Any] | None = None, *,
               kind: str = "notice", user_id: int | None = None, client=None) -> None:
    """Send ``templates/email/<template>.*`` to ``to``. Commits; may raise DeliveryError."""
    assert kind in KINDS
    masked = mask_email(to)
    subject, text, html = render_email(template, {**_base_context(client), **(context or {})})
    try:
        message = build_message(to, subject, text, html)
    except ValueError:
        metrics.delivery("email", kind, "invalid")
        raise DeliveryError("This email address can't be used. Check it and try again, or "
                            "choose another method.", "invalid recipient address") from None
    counted = _check_throttles("email", to, masked, kind, user_id)
    backend = MAIL_BACKENDS[current_app.config["IDP_MAIL_BACKEND"]]()
    try:
        backend.send(message, kind)
    except TransportError as exc:
        raise _failed("email", kind, masked, user_id, backend.name, exc, counted) from None
    _sent("email", kind, masked, user_id, backend.name)


def send_sms(to: str, template: str, context: dict[str, Any] | None = None, *,
             kind: str = "passcode", user_id: int | None = None, client=None) -> None:
    """Send ``templates/sms/<template>.txt`` to a US number. Commits; may raise
    PhoneNumberError (before anything is sent) or DeliveryError."""
    assert kind in KINDS
    try:
        to = normalize_us_phone(to)
    except PhoneNumberError:
        metrics.delivery("sms", kind, "invalid")
        raise
    masked = mask_phone(to)
    body = " ".join(render_template(f"sms/{template}.txt",
                                    **{**_base_context(client), **(context or {})}).split())
    counted = _check_throttles("sms", to, masked, kind, user_id)
    backend = SMS_BACKENDS[current_app.config["IDP_SMS_BACKEND"]]()
    try:
        backend.send(to, body, kind)
    except TransportError as exc:
        raise _failed("sms", kind, masked, user_id, backend.name, exc, counted) from None
    _sent("sms", kind, masked, user_id, backend.name)
