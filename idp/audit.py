"""The audit trail: one row per security-relevant event, in the caller's transaction."""

from __future__ import annotations

import logging
from typing import Any

from flask import has_request_context, request
from sqlalchemy import insert

from idp.extensions import db
from idp.models import AuditEvent
from idp.timeutil import utcnow

log = logging.getLogger("idp.audit")


# A Core insert, run at once in the current transaction: an audit row is never read back
# in the request that writes it, and the ORM's unit of work costs several times more.
_INSERT = insert(AuditEvent.__table__)


def record(event: str, *, user_id: int | None = None, client_id: str | None = None,
           **detail: Any) -> None:
    """Add an audit event to the current transaction. ``detail`` must hold no secret."""
    ip = request.remote_addr if has_request_context() else None
    db.session.execute(_INSERT, {"at": utcnow(), "event": event, "user_id": user_id,
                                 "client_id": client_id, "ip": ip, "detail": detail})
    log.info("audit %s user=%s client=%s %s", event, user_id, client_id, detail)
