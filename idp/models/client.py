from __future__ import annotations

from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin, list_to_scope, scope_to_list
from flask import g, has_app_context
from sqlalchemy import JSON, String, Text, bindparam, select
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.security import digest_matches
from idp.timeutil import utcnow

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
#: The account page's own client (``idp.selfservice.account``): reserved.
ACCOUNT_CLIENT_ID = "idp-account"


class ClientChecks(ClientMixin):
    """What Authlib, the pipeline and the pages ask of a client, answered from its columns:
    shared by the model and by the read-only record that requests read (``find_client``)."""

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    @property
    def label(self) -> str:
        return self.display_name or self.name

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {"post_logout_redirect_uris": list(self.post_logout_redirect_uris or [])}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # OpenID Connect requires redirect_uri in every request: no default.
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(scope_to_list(self.scope))
        return list_to_scope([s for s in scope_to_list(scope) if s in allowed])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison, no normalisation, no prefix matching.
        return redirect_uri in (self.redirect_uris or [])

    def check_client_secret(self, client_secret: str) -> bool:
        return digest_matches(client_secret, self.client_secret_digest)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # A client authenticates only with the method it was registered with.
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in (self.grant_types or [])

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (self.grant_types or [])


class Client(db.Model, ClientChecks):
    """A registered relying party, with its protocol settings, branding and policy.

    ``settings`` holds values contributed by plugins (for example the MFA policy); the
    core stores them without interpreting them.
    """

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_secret_digest: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    display_name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    auth_method: Mapped[str] = mapped_column(String(40), default="client_secret_basic")
    redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list] = mapped_column(JSON, default=list)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000))
    grant_types: Mapped[list] = mapped_column(JSON, default=list)
    scope: Mapped[str] = mapped_column(String(500), default="openid profile email phone")
    require_pkce: Mapped[bool] = mapped_column(default=False)
    jwks: Mapped[dict | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    terms_text: Mapped[str | None] = mapped_column(Text)
    help_contact: Mapped[str | None] = mapped_column(String(500))
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClientRecord(ClientChecks):
    """A client's columns, read with one Core query: what a request needs of its client
    (loading the ORM entity cost more than the query). Read-only: the CLI changes clients
    through the model."""

    def __init__(self, values):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"<ClientRecord {self.client_id}>"


_CLIENTS = Client.__table__
_BY_CLIENT_ID = select(_CLIENTS).where(_CLIENTS.c.client_id == bindparam("client_id"))


def _read_client(client_id: str) -> ClientRecord | None:
    row = db.session.execute(_BY_CLIENT_ID, {"client_id": client_id}).first()
    return ClientRecord(row._mapping) if row is not None else None


def client_columns() -> list:
    """The columns a ``ClientRecord`` is made of, to read with another query's row."""
    return list(_CLIENTS.c)


def remember_client(row) -> ClientRecord | None:
    """A ``ClientRecord`` from a row that holds ``client_columns()`` (e.g. joined to the
    pending request), kept as this request's answer of ``find_client``."""
    mapping = row._mapping
    values = {column.name: mapping[column] for column in _CLIENTS.c}
    record = ClientRecord(values) if values["client_id"] is not None else None
    if record is not None and has_app_context():
        g.setdefault("idp_clients", {})[record.client_id] = record
    return record


def find_client(client_id: str) -> ClientRecord | None:
    """The client with this ``client_id``, read-only. Several parts of one request ask for
    it (the pipeline, the page, Authlib's grant): it is read from the database once per
    request."""
    if not has_app_context():
        return _read_client(client_id)
    found = g.setdefault("idp_clients", {})
    if client_id not in found:
        found[client_id] = _read_client(client_id)
    return found[client_id]
