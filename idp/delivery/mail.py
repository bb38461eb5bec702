"""Email: messages built from templates, sent by SMTP or kept in the development outbox."""

from __future__ import annotations

import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, make_msgid, parseaddr

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


def build_message(to: str, subject: str, text: str, html: str) -> EmailMessage:
    config = current_app.config
    message = EmailMessage()
    name, address = parseaddr(config["IDP_MAIL_FROM"])
    message["From"] = formataddr((name or config["IDP_BRAND_NAME"], address))
    message["To"] = str(Address(addr_spec=to))
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=address.partition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class SmtpBackend:
    name = "smtp"

    def send(self, message: EmailMessage, kind: str) -> None:
        config = current_app.config
        host, port = config["IDP_SMTP_HOST"], config["IDP_SMTP_PORT"]
        timeout = config["IDP_SMTP_TIMEOUT"]
        security = config["IDP_SMTP_SECURITY"]
        context = ssl.create_default_context(cafile=config["IDP_SMTP_CA_FILE"] or None)
        try:
            if security == "tls":
                smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
            else:
                smtp = smtplib.SMTP(host, port, timeout=timeout)
            with smtp:
                if security == "starttls":
                    smtp.starttls(context=context)
                if config["IDP_SMTP_USERNAME"]:
                    smtp.login(config["IDP_SMTP_USERNAME"], config["IDP_SMTP_PASSWORD"])
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise TransportError(f"SMTP {host}:{port}: {type(exc).__name__}") from None


class OutboxMailBackend:
    name = "outbox"

    def send(self, message: EmailMessage, kind: str) -> None:
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        db.session.add(OutboxMessage(channel="email", recipient=str(message["To"]),
                                     subject=str(message["Subject"]), text=text, html=html,
                                     kind=kind))


MAIL_BACKENDS = {"smtp": SmtpBackend, "outbox": OutboxMailBackend}
