"""Email: messages built from templates, sent by SMTP or kept in the development outbox."""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from email.charset import QP, Charset
from email.errors import HeaderParseError
from email.header import Header
from email.headerregistry import Address
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, make_msgid, parseaddr

from flask import current_app, render_template

from idp.extensions import db
from idp.models import OutboxMessage


class TransportError(Exception):
    """The provider did not take the message (refused, timed out, answered an error)."""


def render_email(template: str, context: dict) -> tuple[str, str, str]:
    """Subject, text and HTML of ``templates/email/<template>.*``."""
    subject = render_template(f"email/{template}.subject.txt", **context).strip()
    text = render_template(f"email/{template}.txt", **context)
    html = render_template(f"email/{template}.html", **context)
    return " ".join(subject.split()), text, html


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable in the raw message, unlike base64


def _header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def build_message(to: str, subject: str, text: str, html: str) -> Message:
    """A text and HTML message from ``IDP_MAIL_FROM`` (shown with the brand name unless it
    names its own sender). Raises ValueError when ``to`` is not exactly one address.

    Built with the ``email.mime`` classes: the ``EmailMessage`` API parses every header it
    is given back into objects, which cost more than the rest of sending a notice."""
    config = current_app.config
    try:
        recipient = Address(addr_spec=to)
    except (ValueError, HeaderParseError) as exc:
        raise ValueError(f"not one email address: {exc}") from None
    name, address = parseaddr(config["IDP_MAIL_FROM"])
    message = MIMEMultipart("alternative")
    message["From"] = formataddr((name or config["IDP_BRAND_NAME"], address), charset="utf-8")
    message["To"] = recipient.addr_spec
    message["Subject"] = _header(subject)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=address.partition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.attach(MIMEText(text, "plain", _UTF8_QP))
    message.attach(MIMEText(html, "html", _UTF8_QP))
    return message


def message_bodies(message: Message) -> tuple[str, str]:
    """The text and HTML bodies of a message made by ``build_message``."""
    bodies = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            bodies.setdefault(part.get_content_subtype(),
                              payload.decode(part.get_content_charset() or "utf-8"))
    return bodies.get("plain", ""), bodies.get("html", "")


def _describe(exc: BaseException, where: str, timeout: float) -> str:
    """What went wrong, for operators: never the message, the password or a full address."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate of {where} not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 530:
        return f"{where} requires a login, see IDP_SMTP_USERNAME ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"{where} refused the login ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({str(code) for code, _ in exc.recipients.values()})
        return f"{where} refused the recipient ({', '.join(codes)})"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"{where} refused the sender ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPDataError):
        return f"{where} refused the message ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{where} answered {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"{where}: {exc}"
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return f"no answer from {where} within {timeout:g} seconds (timed out)"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(exc, OSError):
        return f"cannot reach {where}: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, UnicodeError):
        return f"{where}: the login or a header is not plain ASCII ({type(exc).__name__})"
    return f"{where}: {type(exc).__name__}"


def _tls_context(ca_file: str) -> ssl.SSLContext:
    """Certificates checked against ``ca_file`` (PEM), or the system's store without one."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise TransportError(f"cannot use IDP_SMTP_CA_FILE {ca_file}: {reason}") from None


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """One login with the first mechanism both sides know (``SMTP.login`` tries every
    mechanism in turn, so a wrong password would count as several failures)."""
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("the server offers no login (AUTH)")
    offered = smtp.esmtp_features["auth"].upper().split()
    mechanism = next((m for m in ("CRAM-MD5", "PLAIN", "LOGIN") if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPNotSupportedError(f"no login mechanism in common ({' '.join(offered)})")
    smtp.user, smtp.password = user, password
    authobject = getattr(smtp, "auth_" + mechanism.lower().replace("-", "_"))
    smtp.auth(mechanism, authobject)


#: A connection unused for longer than this is closed rather than reused: servers drop idle
#: clients (RFC 5321 asks them to wait five minutes; some wait less).
IDLE_SECONDS = 30.0
_HELD = threading.local()  # this thread's open connection: (settings, SMTP, last used)


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        smtp.close()


def _held_connection(settings: tuple) -> smtplib.SMTP | None:
    """The connection this thread kept from its last message, if it was made with the same
    settings, was used recently and still answers (``NOOP``): a message is only ever offered
    on a live connection, so it is offered once."""
    held = getattr(_HELD, "smtp", None)
    _HELD.smtp = None
    if held is None:
        return None
    held_settings, smtp, last_used = held
    if held_settings != settings or time.monotonic() - last_used > IDLE_SECONDS:
        _close(smtp)
        return None
    try:
        code, _ = smtp.noop()
    except (smtplib.SMTPException, OSError):
        code = None
    if code != 250:
        _close(smtp)
        return None
    return smtp


class SmtpBackend:
    """SMTP with ``IDP_SMTP_SECURITY`` none, starttls (required, the certificate checked
    before any login) or tls (implicit), an optional login, and a timeout on every step.
    A message is offered once: a failure is reported, never retried.

    The connection (with its TLS session and login) is kept for the thread's next message
    (``IDLE_SECONDS``), which then costs a ``NOOP`` instead of a new connection, handshake
    and login; any failure closes it."""

    name = "smtp"

    def send(self, message: Message, kind: str) -> None:
        config = current_app.config
        host, port = config["IDP_SMTP_HOST"], config["IDP_SMTP_PORT"]
        timeout = config["IDP_SMTP_TIMEOUT"]
        settings = (host, port, timeout, config["IDP_SMTP_SECURITY"],
                    config["IDP_SMTP_CA_FILE"], config["IDP_SMTP_USERNAME"],
                    config["IDP_SMTP_PASSWORD"])
        where = f"SMTP server {host}:{port}"
        smtp = _held_connection(settings)
        try:
            if smtp is None:
                smtp = self._connect(settings)
            smtp.send_message(message)
        except (smtplib.SMTPException, OSError, UnicodeError) as exc:
            _close(smtp)
            raise TransportError(_describe(exc, where, timeout)) from None
        _HELD.smtp = (settings, smtp, time.monotonic())

    @staticmethod
    def _connect(settings: tuple) -> smtplib.SMTP:
        host, port, timeout, security, ca_file, username, password = settings
        context = _tls_context(ca_file) if security in ("starttls", "tls") else None
        if security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        try:
            if security == "starttls":
                smtp.starttls(context=context)
            if username:
                _login(smtp, username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp


class OutboxMailBackend:
    name = "outbox"

    def send(self, message: Message, kind: str) -> None:
        text, html = message_bodies(message)
        db.session.add(OutboxMessage(channel="email", recipient=str(message["To"]),
                                     subject=str(message["Subject"]), text=text, html=html,
                                     kind=kind))


MAIL_BACKENDS = {"smtp": SmtpBackend, "outbox": OutboxMailBackend}
