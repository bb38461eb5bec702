"""The authorization server: Authlib's framework with our storage and our stricter rules.

Where Authlib is more lenient than we want, the gap is closed here:
- PKCE accepts only S256, and is required for public clients and flagged clients;
- used codes are kept (marked used), so a replayed code revokes what it issued;
- refresh tokens rotate atomically and reuse revokes the whole family;
- every secret (code, access token, refresh token) is stored as a SHA-256 digest.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

from authlib.consts import default_json_headers
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    grants,
    list_to_scope,
    scope_to_list,
)
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from authlib.oidc.core import UserInfoEndpoint as _UserInfoEndpoint
from authlib.oidc.core import grants as oidc_grants
from flask import current_app, g
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from werkzeug.local import LocalProxy

from idp import audit
from idp.extensions import db
from idp.models import (
    AUTH_METHODS,
    AuthorizationCode,
    Client,
    Token,
    UsedClientAssertion,
    User,
    find_client,
)
from idp.models.oauth import TokenChecks
from idp.oauth import client_keys, keys
from idp.oauth.claims import user_claims
from idp.oauth.issuer import issuer
from idp.security import digest, random_token
from idp.timeutil import epoch, from_epoch, utcnow

log = logging.getLogger(__name__)

SECRET_AUTH_METHODS = [m for m in AUTH_METHODS if m != "none"]

# Scopes that only make sense for a signed-in user (not for client_credentials).
USER_SCOPES = {"openid", "offline_access"}

# Statements of the hot paths, built once (each request only binds its values).
# A bearer token with what its checks read, and its user's columns, in one Core query
# (userinfo reads them only; loading ORM entities would cost more than the query).
_TOKENS, _USERS = Token.__table__, User.__table__
_BEARER_TOKEN_COLUMNS = ("id", "client_id", "user_id", "scope", "issued_at", "expires_at",
                         "revoked_at")
_TOKEN_BY_ACCESS = (
    select(*(_TOKENS.c[name] for name in _BEARER_TOKEN_COLUMNS),
           *(column.label("u_" + column.name) for column in _USERS.c))
    .select_from(_TOKENS.outerjoin(_USERS, _USERS.c.id == _TOKENS.c.user_id))
    .where(_TOKENS.c.access_token_digest == bindparam("digest"))
)
_INSERT_TOKEN = insert(Token.__table__)
_ROTATE_TOKEN = (
    update(Token.__table__)
    .where(Token.__table__.c.id == bindparam("token_id"),
           Token.__table__.c.rotated_at.is_(None), Token.__table__.c.revoked_at.is_(None))
    .values(rotated_at=bindparam("now"))
)
_USE_CODE = (
    update(AuthorizationCode.__table__)
    .where(AuthorizationCode.__table__.c.id == bindparam("code_id"),
           AuthorizationCode.__table__.c.used_at.is_(None))
    .values(used_at=bindparam("now"))
)
_TOKEN_BY_REFRESH = (select(Token).where(Token.refresh_token_digest == bindparam("digest"))
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
    db.session.execute(_INSERT_TOKEN, dict(
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


# --- grants ---------------------------------------------------------------------------


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def issue_code(self, redirect_uri: str, user: User, sign_in: dict) -> list[tuple[str, str]]:
        """Create and store a code for ``user``; return the response parameters."""
        self.request.user = user
        code = self.generate_authorization_code()
        self.save_authorization_code(code, self.request, sign_in)
        params = [("code", code)]
        if self.request.payload.state is not None:
            params.append(("state", self.request.payload.state))
        return params

    def generate_authorization_code(self) -> str:
        return new_token()

    def save_authorization_code(self, code, request, sign_in=None):
        sign_in = sign_in or {}
        data = request.payload.data
        lifetime = timedelta(seconds=current_app.config["IDP_CODE_LIFETIME"])
        db.session.add(AuthorizationCode(
            code_digest=digest(code),
            client_id=request.client.get_client_id(),
            user_id=request.user.id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope or "",
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            auth_time=sign_in.get("auth_time") or epoch(utcnow()),
            acr=sign_in.get("acr"),
            amr=sign_in.get("amr") or [],
            sid=sign_in.get("sid"),
            claims=sign_in.get("claims"),
            expires_at=utcnow() + lifetime,
        ))

    def query_authorization_code(self, code, client):
        if not isinstance(code, str) or len(code) > 200:
            return None
        row = db.session.scalar(
            db.select(AuthorizationCode).filter_by(
                code_digest=digest(code), client_id=client.get_client_id()
            )
        )
        if row is None:
            return None
        if row.used_at is not None:
            revoke_tokens_of_code(row)
            raise InvalidGrantError("The authorization code was already used.")
        if row.is_expired():
            return None
        return row

    def delete_authorization_code(self, authorization_code):
        # Mark the code used atomically: of two concurrent redemptions only one wins.
        result = db.session.execute(_USE_CODE,
                                    {"code_id": authorization_code.id, "now": utcnow()})
        if result.rowcount != 1:
            revoke_tokens_of_code(authorization_code)
            raise InvalidGrantError("The authorization code was already used.")

    def authenticate_user(self, authorization_code):
        user = db.session.get(User, authorization_code.user_id)
        return None if user is None or user.disabled else user

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None,
                       include_refresh_token=True):
        # A refresh token is issued only for the consented offline_access scope.
        include_refresh_token = include_refresh_token and "offline_access" in scope_to_list(
            scope or ""
        )
        return super().generate_token(user=user, scope=scope, grant_type=grant_type,
                                      expires_in=expires_in,
                                      include_refresh_token=include_refresh_token)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        if not isinstance(refresh_token, str) or len(refresh_token) > 200:
            return None
        row = db.session.scalar(_TOKEN_BY_REFRESH, {"digest": digest(refresh_token)})
        if row is None:
            return None
        if row.rotated_at is not None:
            # An old refresh token came back: someone holds a copy. End the whole family.
            revoke_family([row.family_id], "refresh_token_reused", row.client_id)
            return None
        if row.revoked_at is not None or row.is_refresh_expired():
            return None
        if row.user is None or row.user.disabled:
            return None
        return row

    def authenticate_user(self, refresh_token):
        user = refresh_token.user
        return None if user is None or user.disabled else user

    def _validate_token_scope(self, refresh_token):
        # RFC 6749 §6: a refresh may narrow the access token's scope, never widen the grant.
        requested = scope_to_list(self.request.payload.scope or "")
        if not set(requested) <= set(scope_to_list(refresh_token.grant_scope)):
            raise InvalidScopeError()

    def issue_token(self, user, refresh_token):
        # Without a scope the grant's full scope is issued again, even after a narrowed
        # refresh; the new refresh token keeps the grant (RFC 6749 §6).
        scope = self.request.payload.scope or refresh_token.grant_scope
        return self.generate_token(user=user, scope=scope,
                                   include_refresh_token=self.INCLUDE_NEW_REFRESH_TOKEN)

    def revoke_old_credential(self, refresh_token):
        result = db.session.execute(_ROTATE_TOKEN,
                                    {"token_id": refresh_token.id, "now": utcnow()})
        if result.rowcount != 1:
            db.session.rollback()
            revoke_family([refresh_token.family_id], "refresh_token_reused",
                          refresh_token.client_id)
            raise InvalidGrantError("The refresh token was already used.")


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_AUTH_METHODS

    def generate_token(self, user=None, scope=None, grant_type=None, expires_in=None,
                       include_refresh_token=False):
        # No user signs in: no ID token, no userinfo and no offline access.
        scope = list_to_scope([s for s in scope_to_list(scope or "") if s not in USER_SCOPES])
        return super().generate_token(user=user, scope=scope, grant_type=grant_type,
                                      expires_in=expires_in, include_refresh_token=False)


# --- extensions -------------------------------------------------------------------------


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only; required for public clients and clients flagged for it."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        client = grant.request.client
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if not challenge and not method and (client.is_public or client.require_pkce):
            raise InvalidRequestError("This client must use PKCE: send 'code_challenge'.")
        if challenge and method != "S256":
            raise InvalidRequestError("'code_challenge_method' must be 'S256'.")
        return super().validate_code_challenge(grant, redirect_uri)


class OpenIDCode(oidc_grants.OpenIDCode):
    """ID tokens for the code flow, with ``sid`` and the sign-in's acr/amr."""

    def exists_nonce(self, nonce, request):
        # The nonce protects the client; the code itself is single use.
        return False

    def _key(self):
        if "idp_signing_key" not in g:
            g.idp_signing_key = keys.active_key()
        return g.idp_signing_key

    def resolve_client_private_key(self, client):

        return keys.private_key(self._key())

    def get_client_algorithm(self, client):
        return "RS256"

    def get_encode_header(self, client):
        return {"alg": "RS256", "kid": self._key().kid, "typ": "JWT"}

    def get_client_claims(self, client):
        now = epoch(utcnow())
        return {
            "iss": issuer(),
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + current_app.config["IDP_ID_TOKEN_LIFETIME"],
        }

    def get_authorization_code_claims(self, authorization_code):
        claims = super().get_authorization_code_claims(authorization_code)
        if authorization_code.sid:
            claims["sid"] = authorization_code.sid
        return claims

    def generate_user_info(self, user, scope):
        return user_claims(user, scope, for_id_token=True)


# --- client authentication ------------------------------------------------------------


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt``: an assertion signed with a key from the client's JWKS."""

    CLIENT_AUTH_METHOD = "private_key_jwt"
    # An assertion is used at once; a longer life only widens the replay window.
    MAX_LIFETIME = 3600

    def __init__(self):
        super().__init__(validate_jti=True)

    def get_audiences(self):
        return [issuer(), issuer() + "/token"]

    def verify_claims(self, claims):
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp > epoch(utcnow()) + self.MAX_LIFETIME:
            raise InvalidClientError(description="The assertion expires too far in the future.")
        super().verify_claims(claims)

    def validate_jti(self, claims, jti):
        if not isinstance(jti, str) or not jti or len(jti) > 200 or "\x00" in jti:
            raise InvalidClientError(description="The assertion's jti is not valid.")
        leeway = timedelta(seconds=current_app.config["IDP_CLIENT_ASSERTION_LEEWAY"])
        db.session.add(UsedClientAssertion(
            client_id=str(claims["sub"]), jti=jti, expires_at=from_epoch(claims["exp"]) + leeway
        ))
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return False
        return True

    def extract_assertion(self, assertion: str):
        headers, claims = super().extract_assertion(assertion)
        # The keys are resolved before the signature is checked; the kid says whether
        # the keys fetched from a jwks_uri may be stale (see client_keys).
        kid = headers.get("kid")
        g.idp_assertion_kid = kid if isinstance(kid, str) else None
        return headers, claims

    def resolve_client_public_key(self, client):
        try:
            if client.jwks:
                return KeySet.import_key_set(client.jwks)
            if client.jwks_uri:
                return client_keys.cache(current_app).keyset(
                    client.client_id, client.jwks_uri, g.pop("idp_assertion_kid", None),
                    current_app.config)
        except (client_keys.ClientKeysUnavailable, ValueError, TypeError, KeyError,
                JoseError) as exc:
            log.warning("keys of client %s unusable: %s", client.client_id, exc)
            raise InvalidClientError(
                description="The client's public keys could not be loaded."
            ) from None
        return KeySet([])


# --- resource endpoints ---------------------------------------------------------------


class BearerError(OAuth2Error):
    """A refusal by a bearer-protected endpoint, with its RFC 6750 §3 challenge."""

    #: whether the challenge names the error (not when no token was sent at all)
    challenge_has_error = True
    challenge_scope: str | None = None

    def get_headers(self):
        headers = super().get_headers()
        attributes = []
        if self.challenge_has_error:
            attributes.append(f'error="{self.error}"')
            if self.challenge_scope:
                attributes.append(f'scope="{self.challenge_scope}"')
        headers.append(("WWW-Authenticate", " ".join(["Bearer", ", ".join(attributes)]).strip()))
        return headers


class MissingBearerTokenError(BearerError):
    error = "invalid_token"
    description = "An access token is required."
    status_code = 401
    challenge_has_error = False


class MalformedBearerRequestError(BearerError):
    error = "invalid_request"
    status_code = 400


class BearerScopeError(BearerError):
    error = "insufficient_scope"
    description = "The access token does not have the scope this endpoint needs."
    status_code = 403


class UserColumns(SimpleNamespace):
    """A user's stored columns, read-only, as the claims of userinfo read them."""

    def get_user_id(self) -> int:
        return self.id


class BearerToken(TokenChecks):
    """An access token presented to a bearer-protected endpoint, with its user's columns
    (from one query), answering what Authlib's checks ask."""

    def __init__(self, row):
        values = row._mapping
        for name in _BEARER_TOKEN_COLUMNS:
            setattr(self, name, values[name])
        self.user = (UserColumns(**{c.name: values["u_" + c.name] for c in _USERS.c})
                     if values["user_id"] is not None else None)

    def get_user(self):
        return self.user

    def get_client(self) -> Client | None:
        return find_client(self.client_id)


class _TokenBearerValidator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        if not token_string or len(token_string) > 200:
            return None
        row = db.session.execute(_TOKEN_BY_ACCESS, {"digest": digest(token_string)}).first()
        if row is None:
            return None
        token = BearerToken(row)
        if token.user is not None and token.user.disabled:
            return None
        return token

    def validate_token(self, token, scopes, request):
        try:
            super().validate_token(token, scopes, request)
        except InsufficientScopeError:
            error = BearerScopeError()
            error.challenge_scope = " ".join(scopes or [])
            raise error from None


class BearerProtector(ResourceProtector):
    """Accepts the bearer token in the Authorization header or, for POST, in the form body
    (RFC 6750 §2.1, §2.2), never in both and never twice."""

    def parse_request_authorization(self, request):
        from flask import request as flask_request

        header = request.headers.get("Authorization", "")
        scheme, _, header_token = header.strip().partition(" ")
        uses_header = scheme.lower() == "bearer"
        body_tokens = []
        if flask_request.method == "POST" and flask_request.mimetype == (
            "application/x-www-form-urlencoded"
        ):
            body_tokens = flask_request.form.getlist("access_token")
        if len(body_tokens) > 1 or (uses_header and body_tokens):
            raise MalformedBearerRequestError("Send the access token once, in one place only.")
        if body_tokens:
            token = body_tokens[0]
        elif uses_header:
            token = header_token.strip()
            if not token or " " in token:
                raise MalformedBearerRequestError("The Authorization header is malformed.")
        else:
            raise MissingBearerTokenError()
        return self.get_token_validator("bearer"), token


class UserInfoEndpoint(_UserInfoEndpoint):
    def create_endpoint_request(self, request):
        # The resource protector reads the bearer token from Flask's request itself; an
        # OAuth 2.0 request object (its URL, form and headers parsed) would go unused.
        return None

    def __call__(self, request):
        # Userinfo is answered as JSON, never as a signed JWT (discovery offers no
        # userinfo signing algorithm), so the token's client is not needed here.
        token = self.resource_protector.acquire_token("openid")
        return 200, self.generate_user_info(token.get_user(), token.scope), default_json_headers

    def generate_user_info(self, user, scope):
        if user is None:
            raise InvalidTokenError(description="The access token was not issued to a user.")
        return user_claims(user, scope)

    def get_issuer(self):
        return issuer()

    def resolve_private_key(self):
        return keys.signing_jwk()


class _PresentedToken:
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


def _find_token(token_string, hint=None) -> _PresentedToken | None:
    if not isinstance(token_string, str) or not token_string or len(token_string) > 200:
        return None
    value = digest(token_string)
    row = db.session.scalar(db.select(Token).where(
        or_(Token.access_token_digest == value, Token.refresh_token_digest == value)
    ))
    if row is None:
        return None
    kind = "access_token" if row.access_token_digest == value else "refresh_token"
    return _PresentedToken(row, kind)


def _check_token_params(request) -> None:
    # An unknown token_type_hint is ignored (RFC 7009 §4.1.2; RFC 7662 §2.1): the token is
    # looked up among every kind anyway.
    if not request.form.get("token"):
        raise InvalidRequestError("Missing 'token'.")


class RevocationEndpoint(_RevocationEndpoint):
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def check_params(self, request, client):
        _check_token_params(request)

    def query_token(self, token_string, token_type_hint):
        return _find_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        row = token.row
        if token.kind == "refresh_token":
            # Revoking a refresh token ends the grant: every token of its family.
            revoke_family([row.family_id], "refresh_token_revoked", row.client_id)
        else:
            # The access token alone ends now; the refresh token stored beside it belongs to
            # the grant, which only revoking the refresh token ends.
            row.expires_at = min(row.expires_at, utcnow())
            audit.record("token_revoked", user_id=row.user_id, client_id=row.client_id)
            db.session.commit()


class IntrospectionEndpoint(_IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = SECRET_AUTH_METHODS

    def check_params(self, request, client):
        _check_token_params(request)

    def query_token(self, token_string, token_type_hint):
        return _find_token(token_string, token_type_hint)

    def check_permission(self, token, client, request):
        # A client may introspect only the tokens issued to it.
        return token.check_client(client)

    def introspect_token(self, token):
        row = token.row
        expires = row.refresh_expires_at if token.kind == "refresh_token" else row.expires_at
        payload = {
            "active": True,
            "client_id": row.client_id,
            "token_type": "refresh_token" if token.kind == "refresh_token" else "Bearer",
            "scope": row.scope,
            "iss": issuer(),
            "aud": row.client_id,
            "iat": epoch(row.issued_at),
            "exp": epoch(expires),
        }
        if row.user is not None:
            payload["sub"] = row.user.sub
            payload["username"] = row.user.username
        if row.acr:
            payload["acr"] = row.acr
        if row.auth_time:
            payload["auth_time"] = row.auth_time
        return payload


# --- assembly -------------------------------------------------------------------------

SCOPES_SUPPORTED = ["openid", "profile", "email", "phone", "offline_access"]

# The application's authorization server (one per application, built by ``init_app``).
server: AuthorizationServer = LocalProxy(lambda: current_app.extensions["idp.oauth_server"])


def init_app(app) -> None:
    from idp.oauth.logout import EndSessionEndpoint

    lifetime = app.config["IDP_ACCESS_TOKEN_LIFETIME"]
    app.config.setdefault("OAUTH2_ACCESS_TOKEN_GENERATOR", new_token)
    app.config.setdefault("OAUTH2_REFRESH_TOKEN_GENERATOR", new_token)
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {
        "authorization_code": lifetime,
        "refresh_token": lifetime,
        "client_credentials": lifetime,
    })
    app.config.setdefault("OAUTH2_SCOPES_SUPPORTED", SCOPES_SUPPORTED)
    authorization_server = AuthorizationServer()
    authorization_server.init_app(app, query_client=query_client, save_token=save_token)
    authorization_server.register_grant(
        AuthorizationCodeGrant, [S256CodeChallenge(required=True), OpenIDCode(require_nonce=False)]
    )
    authorization_server.register_grant(RefreshTokenGrant)
    authorization_server.register_grant(ClientCredentialsGrant)
    authorization_server.register_client_auth_method("private_key_jwt", PrivateKeyJWT())
    authorization_server.register_endpoint(RevocationEndpoint)
    authorization_server.register_endpoint(IntrospectionEndpoint)
    protector = BearerProtector()
    protector.register_token_validator(_TokenBearerValidator())
    authorization_server.register_endpoint(UserInfoEndpoint(resource_protector=protector))
    authorization_server.register_endpoint(EndSessionEndpoint)
    app.extensions["idp.oauth_server"] = authorization_server
    app.extensions["idp.client_keys"] = client_keys.ClientKeyCache()
