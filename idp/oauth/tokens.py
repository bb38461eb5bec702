"""Token storage (RFC 6749 tokens and codes as digests): issuing, finding, rotating and
revoking them, with the statements of the hot paths built once."""

from __future__ import annotations

from datetime import timedelta

from authlib.oauth2.rfc6749 import InvalidRequestError
from flask import current_app
from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.orm import joinedload

from idp import audit
from idp.extensions import db
from idp.models import AUTH_METHODS, AuthorizationCode, Client, Token, User, find_client
from idp.security import digest, random_token
from idp.timeutil import utcnow

SECRET_AUTH_METHODS = [m for m in AUTH_METHODS if m != "none"]

# Scopes that only make sense for a signed-in user (not for client_credentials).
USER_SCOPES = {"openid", "offline_access"}

# Statements of the hot paths, built once (each request only binds its values).
# A bearer token with what its checks read, and its user's columns, in one Core query
# (userinfo reads them only; loading ORM entities would cost more than the query).
TOKENS, USERS = Token.__table__, User.__table__
BEARER_TOKEN_COLUMNS = ("id", "client_id", "user_id", "scope", "issued_at", "expires_at",
                         "revoked_at")
TOKEN_BY_ACCESS = (
    select(*(TOKENS.c[name] for name in BEARER_TOKEN_COLUMNS),
           *(column.label("u_" + column.name) for column in USERS.c))
    .select_from(TOKENS.outerjoin(USERS, USERS.c.id == TOKENS.c.user_id))
    .where(TOKENS.c.access_token_digest == bindparam("digest"))
)
INSERT_TOKEN = insert(Token.__table__)
ROTATE_TOKEN = (
    update(Token.__table__)
    .where(Token.__table__.c.id == bindparam("token_id"),
           Token.__table__.c.rotated_at.is_(None), Token.__table__.c.revoked_at.is_(None))
    .values(rotated_at=bindparam("now"))
)
USE_CODE = (
    update(AuthorizationCode.__table__)
    .where(AuthorizationCode.__table__.c.id == bindparam("code_id"),
           AuthorizationCode.__table__.c.used_at.is_(None))
    .values(used_at=bindparam("now"))
)
TOKEN_BY_REFRESH = (select(Token).where(Token.refresh_token_digest == bindparam("digest"))
                     .options(joinedload(Token.user)))


def new_token(*_args, **_kwargs) -> str:
    """An access token, refresh token or code: 256 random bits, URL-safe."""
    return random_token(32)


def query_client(client_id) -> Client | None:
    if (not isinstance(client_id, str) or not client_id or len(client_id) > 64
            or "\x00" in client_id):
        return None
    return find_client(client_id)


def save_token(token: dict, request) -> None:
    """Store a newly issued token (digests only), in the token request's transaction."""
    now = utcnow()
    config = current_app.config
    code = getattr(request, "authorization_code", None)
    previous = getattr(request, "refresh_token", None)
    source = code or previous
    refresh = token.get("refresh_token")
    # A Core insert: nothing reads the row back in this request, and the ORM's unit of work
    # would cost several times more than the statement.
    db.session.execute(INSERT_TOKEN, dict(
        client_id=request.client.get_client_id(),
        user_id=request.user.id if request.user else None,
        access_token_digest=digest(token["access_token"]),
        refresh_token_digest=digest(refresh) if refresh else None,
        token_type=token.get("token_type", "Bearer"),
        scope=token.get("scope", ""),
        grant_scope=(
            code.scope if code else previous.grant_scope if previous else token.get("scope", "")
        ),
        family_id=previous.family_id if previous else random_token(16),
        code_id=code.id if code else (previous.code_id if previous else None),
        sid=source.sid if source else None,
        auth_time=source.auth_time if source else None,
        acr=source.acr if source else None,
        amr=list(source.amr or []) if source else None,
        issued_at=now,
        expires_at=now + timedelta(seconds=token["expires_in"]),
        refresh_expires_at=(
            now + timedelta(seconds=config["IDP_REFRESH_TOKEN_LIFETIME"]) if refresh else None
        ),
        rotated_at=None,
        revoked_at=None,
    ))


def revoke_family(family_ids: list[str], reason: str, client_id: str | None = None) -> int:
    """Revoke every token of the given families; commits, so the revocation survives errors."""
    if not family_ids:
        return 0
    result = db.session.execute(
        update(Token)
        .where(Token.family_id.in_(family_ids), Token.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    audit.record("tokens_revoked", client_id=client_id, reason=reason, count=result.rowcount)
    db.session.commit()
    return result.rowcount


def revoke_tokens_of_code(code: AuthorizationCode) -> None:
    db.session.rollback()
    families = list(db.session.scalars(
        db.select(Token.family_id).filter_by(code_id=code.id).distinct()
    ))
    revoke_family(families, "authorization_code_replayed", code.client_id)




class PresentedToken:
    """A stored token seen through the string that was presented (access or refresh)."""

    def __init__(self, row: Token, kind: str):
        self.row, self.kind = row, kind

    def check_client(self, client) -> bool:
        return self.row.check_client(client)

    def is_expired(self) -> bool:
        if self.kind == "refresh_token":
            return self.row.is_refresh_expired()
        return self.row.is_expired()

    def is_revoked(self) -> bool:
        if self.kind == "refresh_token" and self.row.rotated_at is not None:
            return True
        if self.row.user is not None and self.row.user.disabled:
            return True
        return self.row.is_revoked()


def find_token(token_string, hint=None) -> PresentedToken | None:
    if not isinstance(token_string, str) or not token_string or len(token_string) > 200:
        return None
    value = digest(token_string)
    row = db.session.scalar(db.select(Token).where(
        or_(Token.access_token_digest == value, Token.refresh_token_digest == value)
    ))
    if row is None:
        return None
    kind = "access_token" if row.access_token_digest == value else "refresh_token"
    return PresentedToken(row, kind)


def check_token_params(request) -> None:
    # An unknown token_type_hint is ignored (RFC 7009 §4.1.2; RFC 7662 §2.1): the token is
    # looked up among every kind anyway.
    if not request.form.get("token"):
        raise InvalidRequestError("Missing 'token'.")


