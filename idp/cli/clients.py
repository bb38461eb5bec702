"""``idp clients``: register and configure relying parties."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from idp import audit
from idp.cli.common import check_length, echo_json
from idp.extensions import db
from idp.models import AUTH_METHODS, GRANT_TYPES, Client
from idp.models.client import ACCOUNT_CLIENT_ID
from idp.oauth import uris
from idp.plugins import PluginRegistry
from idp.security import digest, random_token

DEFAULT_SCOPE = "openid profile email phone offline_access"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
# Client ids travel in URLs and in HTTP Basic credentials: unreserved characters only.
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9._~-]{1,64}")
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


# --- clients ----------------------------------------------------------------------------


URI_OPTIONS = {
    uris.REDIRECT_URIS: "--redirect-uri",
    uris.POST_LOGOUT_REDIRECT_URIS: "--post-logout-redirect-uri",
    uris.BACKCHANNEL_LOGOUT_URI: "--backchannel-logout-uri",
    uris.JWKS_URI: "--jwks-uri",
}


def _check_uri(uri: str, field: str) -> str:
    """Apply the registration rules (``idp.oauth.uris``) to a URI given for ``field``: a
    refusal names the option; a development warning goes to standard error."""
    option = URI_OPTIONS[field]
    try:
        warning = uris.check_uri(uri, field, uris.UriRules.from_config(current_app.config))
    except uris.UriRefused as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    if warning:
        click.echo(f"Warning: {option} {warning}.", err=True)
    return uri



def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path!r} as UTF-8 text ({exc})",
                                 param_hint=what) from None


def _read_jwks(path: str) -> dict:
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    message = "--jwks-file must hold a JSON Web Key Set of public keys"
    try:
        jwks = json.loads(_read_text(path, "--jwks-file"))
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) \
                or not jwks["keys"]:
            raise ValueError
        KeySet.import_key_set(jwks)
    except (ValueError, TypeError, KeyError, JoseError):
        raise click.BadParameter(message) from None
    if any(PRIVATE_JWK_MEMBERS & set(key) for key in jwks["keys"]):
        raise click.BadParameter(message + " (it holds private key material: publish only "
                                 "the public half)")
    return jwks


def client_to_dict(client: Client, registry: PluginRegistry) -> dict:
    data = {
        "client_id": client.client_id,
        "name": client.name,
        "display_name": client.display_name,
        "description": client.description,
        "token_endpoint_auth_method": client.auth_method,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "grant_types": client.grant_types,
        "scope": client.scope,
        "require_pkce": client.require_pkce or client.is_public,
        "jwks_uri": client.jwks_uri,
        "jwks": client.jwks,
        "terms": bool(client.terms_text),
        "help_contact": client.help_contact,
    }
    for setting in registry.client_settings:
        data[setting.name] = (client.settings or {}).get(setting.name, setting.default)
    return data


def _client_options(creating: bool):
    def decorate(func):
        options = [
            click.option("--name", required=creating, help="Internal name of the client."),
            click.option("--redirect-uri", "redirect_uris", multiple=True,
                         help="Registered redirect URI (repeat for several)."),
            click.option("--post-logout-redirect-uri", "post_logout_uris", multiple=True),
            click.option("--backchannel-logout-uri"),
            click.option("--auth-method", type=click.Choice(AUTH_METHODS),
                         default="client_secret_basic" if creating else None),
            click.option("--jwks-uri"),
            click.option("--jwks-file", type=click.Path(exists=True, dir_okay=False)),
            click.option("--grant-type", "grant_types", multiple=True,
                         type=click.Choice(GRANT_TYPES)),
            click.option("--scope", default=DEFAULT_SCOPE if creating else None),
            click.option("--require-pkce/--no-require-pkce", default=None),
            click.option("--display-name"),
            click.option("--description"),
            click.option("--terms-file", type=click.Path(exists=True, dir_okay=False)),
            click.option("--help-contact"),
            click.option("--json", "as_json", is_flag=True, help="Print JSON (the default)."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _apply_client_options(client: Client, params: dict, registry: PluginRegistry,
                          creating: bool) -> None:
    for param, hint, limit in (("name", "--name", 200), ("display_name", "--display-name", 200),
                               ("help_contact", "--help-contact", 500),
                               ("scope", "--scope", 500)):
        check_length(params.get(param), hint, limit)
    if params.get("jwks_uri") and params.get("jwks_file"):
        raise click.UsageError("Give --jwks-uri or --jwks-file, not both.")
    simple = {"name": "name", "backchannel_logout_uri": "backchannel_logout_uri",
              "auth_method": "auth_method", "jwks_uri": "jwks_uri", "scope": "scope",
              "require_pkce": "require_pkce", "display_name": "display_name",
              "description": "description", "help_contact": "help_contact"}
    for param, attr in simple.items():
        if params.get(param) is not None:
            setattr(client, attr, params[param])
    if params.get("redirect_uris"):
        client.redirect_uris = [_check_uri(u, uris.REDIRECT_URIS)
                                for u in params["redirect_uris"]]
    if params.get("post_logout_uris"):
        client.post_logout_redirect_uris = [
            _check_uri(u, uris.POST_LOGOUT_REDIRECT_URIS) for u in params["post_logout_uris"]
        ]
    if params.get("backchannel_logout_uri"):
        _check_uri(params["backchannel_logout_uri"], uris.BACKCHANNEL_LOGOUT_URI)
    if params.get("jwks_uri"):
        _check_uri(params["jwks_uri"], uris.JWKS_URI)
        client.jwks = None
    if params.get("jwks_file"):
        client.jwks = _read_jwks(params["jwks_file"])
        client.jwks_uri = None
    if params.get("grant_types"):
        client.grant_types = list(dict.fromkeys(params["grant_types"]))
    elif creating:
        client.grant_types = ["authorization_code", "refresh_token"]
    if params.get("terms_file"):
        client.terms_text = _read_text(params["terms_file"], "--terms-file")
    settings = dict(client.settings or {})
    for setting in registry.client_settings:
        setting.apply(settings, params)
        if creating and setting.name not in settings:
            settings[setting.name] = setting.default
    client.settings = settings
    _check_client(client)


def _check_client(client: Client) -> None:
    if "authorization_code" in client.grant_types and not client.redirect_uris:
        raise click.UsageError("A client using authorization_code needs --redirect-uri.")
    if client.auth_method == "private_key_jwt" and not (client.jwks or client.jwks_uri):
        raise click.UsageError("private_key_jwt needs --jwks-uri or --jwks-file.")
    if client.is_public and "client_credentials" in client.grant_types:
        raise click.UsageError("A public client (--auth-method none) cannot use "
                               "client_credentials.")
    unknown = set(client.scope.split()) - {"openid", "profile", "email", "phone",
                                            "offline_access"}
    if unknown:
        raise click.UsageError(f"Unknown scope: {' '.join(sorted(unknown))}.")
    if not client.grant_types:
        raise click.UsageError("A client needs at least one --grant-type.")


def _issue_secret(client: Client) -> str | None:
    if client.auth_method in SECRET_METHODS:
        secret = random_token(32)  # 256 bits
        client.client_secret_digest = digest(secret)
        return secret
    client.client_secret_digest = None
    return None


def _find_client(client_id: str) -> Client:
    client = db.session.scalar(db.select(Client).filter_by(client_id=client_id))
    if client is None:
        raise click.ClickException(f"No client with id {client_id!r}.")
    return client



def build_clients_group(registry: PluginRegistry) -> click.Group:
    @click.group("clients", help="Register and configure relying parties.")
    def clients():
        pass

    def add_plugin_options(func):
        for setting in registry.client_settings:
            for option in setting.options:
                func.params.append(option)
        return func

    @clients.command("create")
    @_client_options(creating=True)
    @click.option("--client-id", help="Use this client id instead of a random one.")
    @with_appcontext
    def create(**params):
        """Register a client; prints it as JSON, with its secret (shown only this once)."""
        client_id = params["client_id"] if params.get("client_id") is not None \
            else random_token(16)
        if not CLIENT_ID_PATTERN.fullmatch(client_id):
            raise click.BadParameter("1-64 characters among letters, digits and . _ ~ -",
                                     param_hint="--client-id")
        if db.session.scalar(db.select(Client.id).filter_by(client_id=client_id)):
            raise click.ClickException(f"A client with id {client_id!r} exists already.")
        if client_id == ACCOUNT_CLIENT_ID:
            raise click.ClickException(f"The client id {client_id!r} is reserved for the "
                                       "account page.")
        client = Client(client_id=client_id, redirect_uris=[], post_logout_redirect_uris=[],
                        settings={})
        try:
            _apply_client_options(client, params, registry, creating=True)
        except click.ClickException:
            db.session.rollback()
            raise
        secret = _issue_secret(client)
        db.session.add(client)
        audit.record("client_created", client_id=client_id, auth_method=client.auth_method)
        db.session.commit()
        data = client_to_dict(client, registry)
        if secret:
            data["client_secret"] = secret
        echo_json(data)

    add_plugin_options(create)

    @clients.command("update")
    @click.argument("client_id")
    @_client_options(creating=False)
    @with_appcontext
    def update(client_id, **params):
        """Change a client's settings (only the options given)."""
        client = _find_client(client_id)
        old_method = client.auth_method
        try:
            _apply_client_options(client, params, registry, creating=False)
        except click.ClickException:
            db.session.rollback()
            raise
        secret = None
        if (client.auth_method in SECRET_METHODS) != (old_method in SECRET_METHODS):
            # A secret is issued when the client starts using one, dropped when it stops;
            # moving between client_secret_basic and client_secret_post keeps it.
            secret = _issue_secret(client)
        changed = sorted(k for k, v in params.items()
                         if k != "as_json" and v is not None and v != ())
        audit.record("client_updated", client_id=client_id, options=changed)
        db.session.commit()
        data = client_to_dict(client, registry)
        if secret:
            data["client_secret"] = secret
        echo_json(data)

    add_plugin_options(update)

    @clients.command("list")
    @with_appcontext
    def list_clients():
        """List clients as JSON."""
        rows = db.session.scalars(db.select(Client).order_by(Client.id))
        echo_json([client_to_dict(c, registry) for c in rows])

    @clients.command("show")
    @click.argument("client_id")
    @with_appcontext
    def show(client_id):
        """Show one client as JSON."""
        echo_json(client_to_dict(_find_client(client_id), registry))

    @clients.command("delete")
    @click.argument("client_id")
    @with_appcontext
    def delete(client_id):
        """Delete a client and revoke its tokens."""
        from idp.models import AuthorizationCode, Consent, TermsAcceptance, Token
        from idp.timeutil import utcnow

        client = _find_client(client_id)
        db.session.execute(
            db.update(Token).where(Token.client_id == client_id, Token.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        # A client registered later under the same id inherits no code, consent or terms.
        for model in (AuthorizationCode, Consent, TermsAcceptance):
            db.session.execute(db.delete(model).where(model.client_id == client_id))
        db.session.delete(client)
        audit.record("client_deleted", client_id=client_id)
        db.session.commit()
        click.echo(f"Deleted client {client_id}.")

    @clients.command("rotate-secret")
    @click.argument("client_id")
    @with_appcontext
    def rotate_secret(client_id):
        """Issue a new client secret; the old one stops working at once."""
        client = _find_client(client_id)
        secret = _issue_secret(client)
        if secret is None:
            db.session.rollback()
            raise click.ClickException(f"Client {client_id!r} does not use a client secret.")
        audit.record("client_secret_rotated", client_id=client_id)
        db.session.commit()
        echo_json({"client_id": client_id, "client_secret": secret})

    return clients
