"""``idp keys``: the ID token signing keys and the encryption key."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from idp import audit
from idp.extensions import db
from idp.models import SigningKey

# --- keys -------------------------------------------------------------------------------


@click.group("keys", help="Manage the ID token signing keys and the encryption key.")
def keys_group():
    pass


@keys_group.command("rotate")
@with_appcontext
def keys_rotate():
    """Start signing with a new key; the old one stays published until its tokens expire."""
    from idp.oauth import keys

    key = keys.rotate()
    click.echo(f"New signing key {key.kid}.")
    retired = db.session.scalars(
        db.select(SigningKey).where(SigningKey.retired_at.is_not(None),
                                    SigningKey.publish_until > key.created_at)
    ).all()
    for old in retired:
        click.echo(f"Key {old.kid} stays published until {old.publish_until:%Y-%m-%d %H:%M} "
                   "UTC, for the tokens it signed.")


@keys_group.command("list")
@with_appcontext
def keys_list():
    """List signing keys and whether they are published."""
    from idp.oauth import keys

    published = {k.kid for k in keys.published_keys()}
    for key in db.session.scalars(db.select(SigningKey).order_by(SigningKey.id)):
        status = "active" if key.active else ("published" if key.kid in published else "retired")
        line = f"{key.kid}\t{key.alg}\t{status}\t{key.created_at:%Y-%m-%d %H:%M}"
        if status == "published":
            line += f"\tuntil {key.publish_until:%Y-%m-%d %H:%M}"
        click.echo(line)


@keys_group.command("reencrypt")
@with_appcontext
def keys_reencrypt():
    """Encrypt every stored secret (signing keys, authentication-app secrets, ...) with the
    current IDP_ENCRYPTION_KEY, in one transaction; afterwards the old keys can be dropped
    from IDP_ENCRYPTION_OLD_KEYS (once pending sign-ins made with them have expired)."""
    from idp import crypto

    columns = current_app.extensions["idp.registry"].encrypted_columns
    try:
        moved = crypto.reencrypt(columns)
    except crypto.UndecryptableValue as exc:
        db.session.rollback()
        raise click.ClickException(f"Nothing was changed: {exc}.") from None
    total = sum(moved.values())
    audit.record("secrets_reencrypted", count=total, key_id=crypto.keyring().current.kid)
    db.session.commit()
    for name, count in moved.items():
        click.echo(f"{name}\t{count}")
    click.echo(f"Moved {total} encrypted value{'s' if total != 1 else ''} to the current key "
               f"({crypto.keyring().current.kid}).")
