"""The issuer identifier (``IDP_ISSUER``), the base URL of every endpoint."""

from __future__ import annotations

from flask import current_app


def issuer() -> str:
    return current_app.config["IDP_ISSUER"].rstrip("/")
