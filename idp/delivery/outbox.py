"""The development outbox: messages kept by the outbox backends, at ``/dev/outbox``.

Registered only when ``IDP_DEV_OUTBOX=1``; a production configuration refuses that setting.
"""

from __future__ import annotations

import re

from flask import Blueprint, jsonify, render_template, request
from markupsafe import Markup, escape
from sqlalchemy import func

from idp.delivery.phone import PhoneNumberError, normalize_us_phone
from idp.extensions import db
from idp.models import OutboxMessage

bp = Blueprint("outbox", __name__, url_prefix="/dev")


@bp.after_request
def _never_cached(response):
    """The outbox shows passcodes and links: no browser or proxy keeps a copy."""
    response.headers["Cache-Control"] = "no-store"
    return response

# A URL, without the punctuation that ends the sentence around it.
URL = re.compile(r"https?://[^\s<>\"']*[^\s<>\"'.,;:!?)\]]")


def linkify(text: str) -> Markup:
    """Escape ``text`` and make its URLs clickable."""
    out, last = [], 0
    for match in URL.finditer(text or ""):
        out.append(escape(text[last:match.start()]))
        out.append(Markup('<a href="{0}">{0}</a>').format(match.group(0)))
        last = match.end()
    out.append(escape((text or "")[last:]))
    return Markup("").join(out)


def _recipient(to: str) -> str:
    """The stored form of ``?to=``: an address as given, a phone number in E.164."""
    to = to.strip()
    if "@" in to:
        return to
    try:
        return normalize_us_phone(to)
    except PhoneNumberError:
        return to


def _messages(limit: int = 100) -> list[OutboxMessage]:
    query = db.select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    to = request.args.get("to")
    if to:
        query = query.where(func.lower(OutboxMessage.recipient) == _recipient(to).lower())
    return list(db.session.scalars(query))


@bp.get("/outbox")
def outbox_page():
    return render_template("dev/outbox.html", messages=_messages(), linkify=linkify)


@bp.get("/outbox.json")
def outbox_json():
    return jsonify([
        {"id": m.id, "channel": m.channel, "to": m.recipient, "subject": m.subject,
         "text": m.text, "kind": m.kind, "created_at": m.created_at.isoformat() + "Z"}
        for m in _messages()
    ])
