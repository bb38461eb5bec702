"""The audit trail: one row per security-relevant event, in the caller's transaction."""

from __future__ import annotations

import logging
from typing import Any

from flask import has_request_context, request

from idp.extensions import db
from idp.models import AuditEvent

log = logging.getLogger("idp.audit")


def record(event: str, *, user_id: int | None = None, client_id: str | None = None,
           **detail: Any) -> AuditEvent:
    """Add an audit event to the current transaction. ``detail`` must hold no secret."""
    ip = request.remote_addr if has_request_context() else None
    row = AuditEvent(event=event, user_id=user_id, client_id=client_id, ip=ip, detail=detail)
    db.session.add(row)
    log.info("audit %s user=%s client=%s %s", event, user_id, client_id, detail)
    return row
