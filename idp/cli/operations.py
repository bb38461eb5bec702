"""``idp demo``, ``idp delivery`` and ``idp maintenance``: demo data, message checks and
housekeeping for operators."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

# --- demo -------------------------------------------------------------------------------


@click.group("demo", help="Demo data for the embedded setup.")
def demo():
    pass


@demo.command("seed")
@with_appcontext
def demo_seed():
    """Register the demo applications and users, only when the database is empty."""
    from idp.demo import seed

    registry = current_app.extensions["idp.registry"]
    try:
        result = seed(registry)
    except OSError as exc:
        raise click.ClickException(f"Demo seed failed, nothing was created: {exc}") from None
    if result is None:
        click.echo("The database already has data: demo seed skipped.")
        return
    click.echo(result)


@click.group("delivery", help="Check that email and SMS reach people.")
def delivery():
    pass


@delivery.command("test-email")
@click.option("--to", "to", required=True, help="Address to send a test message to.")
@with_appcontext
def delivery_test_email(to):
    """Send a test email with the configured backend."""
    from idp.delivery import DeliveryError, send_email

    try:
        send_email(to, "test_message", kind="notice")
    except DeliveryError as exc:
        raise click.ClickException(f"Not sent: {exc.reason}") from None
    click.echo(f"Sent a test email to {to} with {current_app.config['IDP_MAIL_BACKEND']}.")


@delivery.command("test-sms")
@click.option("--to", "to", required=True, help="US mobile number to send a test message to.")
@with_appcontext
def delivery_test_sms(to):
    """Send a test text message with the configured backend."""
    from idp.delivery import DeliveryError, PhoneNumberError, send_sms

    try:
        send_sms(to, "notice", {"text": "This is a test message."}, kind="notice")
    except PhoneNumberError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    except DeliveryError as exc:
        raise click.ClickException(f"Not sent: {exc.reason}") from None
    click.echo(f"Sent a test text message with {current_app.config['IDP_SMS_BACKEND']}.")


@click.group("maintenance", help="Housekeeping for operators.")
def maintenance():
    pass


@maintenance.command("prune")
@with_appcontext
def maintenance_prune():
    """Delete sessions, codes, tokens and pending sign-ins that expired a week ago."""
    from idp.maintenance import prune

    for name, count in prune().items():
        click.echo(f"{name}\t{count}")
