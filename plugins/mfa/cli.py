"""``idp mfa``: help-desk commands."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from idp.plugin_api import User, audit, db


def _user(username: str) -> User:
    user = db.session.scalar(db.select(User).filter_by(username=username))
    if user is None:
        raise click.ClickException(f"No user named {username!r}.")
    return user


@click.group("mfa", help="Multifactor authentication: status and resets for the help desk.")
def mfa_cli():
    pass


@mfa_cli.command("status")
@click.argument("username")
@with_appcontext
def status(username):
    """Show a user's MFA enrollment (masked), remembered devices and lock-out."""
    from idp.plugin_api import mask_email
    from plugins.mfa import devices, lockout, policy
    from plugins.mfa.factors import FACTORS, RecoveryFactor

    user = _user(username)
    factors = []
    for row in policy.enrolled_factors(user.id):
        factor = FACTORS.get(row.kind)
        shown = factor.mask(row.destination) if factor is not None else None
        factors.append({"kind": row.kind, "destination": shown,
                        "added": row.created_at.isoformat()})
    click.echo(json.dumps({
        "username": user.username,
        "mandatory": policy.enrollment_mandatory(user),
        "mfa_email": mask_email(policy.mfa_email(user)) if policy.mfa_email(user) else None,
        "factors": factors,
        "recovery_codes_left": RecoveryFactor.remaining(user.id),
        "remembered_devices": len(devices.devices_of(user.id)),
        # The cool-down, the kinds of factor blocked after too many failures in a row and
        # the failures in a row of each kind.
        **lockout.status(user.id),
    }, indent=2))


@mfa_cli.command("reset")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def reset(username, yes):
    """Remove every factor, recovery code and remembered device of a user (lost phone).
    Everything they are signed in with ends: sessions (with back-channel logout) and tokens."""
    from sqlalchemy import delete

    from idp.plugin_api import end_all_sessions_and_revoke
    from plugins.mfa import devices, lockout
    from plugins.mfa.models import MfaAccount, MfaFactor, RecoveryCode

    user = _user(username)
    if not yes:
        click.confirm(f"Reset MFA for {username}? They will enroll again at their next sign-in.",
                      abort=True)
    # The account's row first, as every check of a factor takes it: no cool-down, no
    # count, nothing blocked (recovery codes included).
    lockout.reset(user.id)
    db.session.execute(delete(MfaFactor).where(MfaFactor.user_id == user.id))
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    devices.forget(user.id, None, reason="admin_reset")
    account = db.session.get(MfaAccount, user.id)
    if account is not None:
        account.enrolled_at = None
    audit.record("mfa_reset", user_id=user.id)
    ended = end_all_sessions_and_revoke(user, "mfa_reset", source="cli")
    click.echo(f"MFA reset for {username}. Sessions ended: {ended.sessions_ended}, "
               f"tokens revoked: {ended.tokens_revoked}.")
