"""Demo data: the three reference applications and two accounts (embedded setup only)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from flask import current_app

from idp.accounts import create_user
from idp.extensions import db
from idp.models import Client, User
from idp.plugins import PluginRegistry
from idp.security import digest, random_token

DEMO_PASSWORD = "Demo-Password-1"  # noqa: S105 - published demo credential

DEMO_APPS = [
    {
        "client_id": "click-n-ship",
        "name": "Click-N-Ship",
        "description": "Print shipping labels and pay postage online.",
        "port": 5001,
        "terms": "Click-N-Ship Terms and Conditions.\n\nLabels you print are valid for the "
                 "date shown. Postage is refunded only as the refund policy allows.",
        "help": "Click-N-Ship support: 1-800-555-0100",
        "settings": {},
    },
    {
        "client_id": "customer-onboarding-portal",
        "name": "Customer Onboarding Portal",
        "description": "Set up your business account and its services.",
        "port": 5002,
        "terms": "Customer Onboarding Portal Terms of Use.\n\nYou confirm that you may act "
                 "for the business you register.",
        "help": "Business customer support: 1-800-555-0101",
        "settings": {"mfa_policy": "always"},
    },
    {
        "client_id": "informed-delivery",
        "name": "Informed Delivery",
        "description": "Preview your incoming mail and packages.",
        "port": 5003,
        "terms": None,
        "help": "Informed Delivery support: 1-800-555-0102",
        "settings": {},
    },
]

DEMO_USERS = [
    {"username": "olduser", "email": "olduser@example.com", "phone": None,
     "created_at": datetime(2024, 5, 1), "name": "Olga Older"},
    {"username": "newuser", "email": "newuser@example.com", "phone": None,
     "created_at": datetime(2025, 6, 1), "name": "Nina Newer"},
]


def seed(registry: PluginRegistry) -> str | None:
    """Create the demo data if the database has no clients and no users."""
    if db.session.scalar(db.select(Client.id)) or db.session.scalar(db.select(User.id)):
        return None
    secrets_out = {}
    for app in DEMO_APPS:
        base = f"http://127.0.0.1:{app['port']}"
        secret = random_token(32)
        settings = {s.name: s.default for s in registry.client_settings}
        settings.update({k: v for k, v in app["settings"].items() if k in settings})
        db.session.add(Client(
            client_id=app["client_id"], client_secret_digest=digest(secret), name=app["name"],
            display_name=app["name"], description=app["description"],
            auth_method="client_secret_basic",
            redirect_uris=[base + "/callback"], post_logout_redirect_uris=[base + "/"],
            backchannel_logout_uri=base + "/backchannel-logout",
            grant_types=["authorization_code", "refresh_token"],
            scope="openid profile email phone offline_access", require_pkce=True,
            terms_text=app["terms"], help_contact=app["help"], settings=settings,
        ))
        secrets_out[app["client_id"]] = {"client_secret": secret, "port": app["port"],
                                         "name": app["name"]}
    for user in DEMO_USERS:
        create_user(user["username"], user["email"], DEMO_PASSWORD, phone=user["phone"],
                    created_at=user["created_at"], name=user["name"])
    path = Path(current_app.instance_path) / "demo_clients.json"
    try:
        _write_private(path, json.dumps(secrets_out, indent=2))
    except OSError:
        db.session.rollback()  # without the file the secrets would be lost
        raise
    db.session.commit()
    lines = ["Demo data created.", f"Client secrets written to {path}.", "Demo accounts:"]
    for user in DEMO_USERS:
        lines.append(f"  {user['username']} / {DEMO_PASSWORD}  "
                     f"(account created {user['created_at']:%Y-%m-%d})")
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the owner only from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
