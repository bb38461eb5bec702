"""The multifactor-authentication plugin.

It registers, through ``idp.plugins``, its sign-in steps (enrollment offer, email
verification, method choice, remembered device, challenge, Modify MFA Options), its pages,
the ``urn:idp:acr:mfa`` level and the NIST AAL2 alias, the per-client settings
``--mfa-policy`` and ``--remembered-devices`` and the ``idp mfa`` commands. Its tables are its
own Alembic branch (``migrations/versions``, label ``mfa``), which ``idp db upgrade`` applies
only while the plugin is enabled. Leave it out of ``IDP_PLUGINS`` to switch it off: its tables
and rows stay as they are (``idp db downgrade mfa@base`` drops them).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import click
from flask import Flask

from idp.plugin_api import (
    ClientSetting,
    ConfigError,
    PluginRegistry,
    account_email_verified,
    check_range,
    notice_addresses,
    password_changed,
    sign_in_progress_discarded,
    utcnow,
)


def _apply_policy(settings: dict, params: dict) -> None:
    if params.get("mfa_policy") is not None:
        settings["mfa_policy"] = params["mfa_policy"]


def _apply_devices(settings: dict, params: dict) -> None:
    if params.get("remembered_devices") is not None:
        settings["remembered_devices"] = params["remembered_devices"]


def _check_cutoff(value: str) -> None:
    """A cutoff that is not a date would fail every sign-in: refuse to start instead."""
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ConfigError(f"IDP_MFA_REQUIRED_FROM must be a date like 2025-03-06 "
                          f"(it is {value!r}).") from None


# Setting -> (least, greatest): outside them a limit would lock everyone out, or let a
# six-digit code be guessed, or remember devices for years.
RANGES = {
    "IDP_PASSCODE_MAX_ATTEMPTS": (1, 10),
    "IDP_MFA_MAX_FAILURES": (1, 100),
    "IDP_MFA_MAX_TOTAL_FAILURES": (1, 100),
    "IDP_MFA_LOCKOUT_SECONDS": (60, 86400),
    "IDP_REMEMBER_DEVICE_DAYS": (0, 400),
    "IDP_EMAIL_LINK_MINUTES": (1, 1440),
}


def _check_ranges(config) -> None:
    """Refuse to start with a limit outside its range, naming it."""
    for name, (low, high) in RANGES.items():
        check_range(config, name, low, high)


def _forget_devices_of(app, user, **extra) -> None:
    from plugins.mfa import devices

    devices.forget(user.id, None, reason="password_changed")


def _take_verified_account_email(app, user, **extra) -> None:
    """The account email was just verified by its link: it is the MFA email of an account
    that has none yet (enrollment does not ask to verify it a second time)."""
    from plugins.mfa import lockout

    account = lockout.account_for(user.id)
    if account.mfa_email_verified_at is None:
        account.mfa_email, account.mfa_email_verified_at = user.email, utcnow()


def _mfa_notice_address(app, user, **extra) -> list[str]:
    """Security notices also go to the verified MFA email, when it is another address."""
    from plugins.mfa import policy

    address = policy.mfa_email(user)
    return [address] if address and address.lower() != user.email.lower() else []


def _revoke_codes_of(app, pending, **extra) -> None:
    """A sign-in's progress was discarded: the passcodes and links it sent die with it."""
    from plugins.mfa import passcodes
    from plugins.mfa.links import revoke_links_of_sign_in

    passcodes.revoke_for_sign_in(pending.id)
    revoke_links_of_sign_in(pending.id)


def _prune_statements(now, cutoff) -> dict:
    """The plugin's rows that can no longer be used: passcodes and email links past their
    lifetime, remembered devices expired or forgotten (kept a while, as the core keeps its
    own, for the audit trail)."""
    from sqlalchemy import delete, or_

    from plugins.mfa.models import EmailVerification, Passcode, RememberedDevice

    return {
        "mfa_passcodes": delete(Passcode).where(Passcode.expires_at < cutoff),
        "mfa_email_verifications": delete(EmailVerification).where(
            EmailVerification.expires_at < cutoff),
        "mfa_remembered_devices": delete(RememberedDevice).where(
            or_(RememberedDevice.expires_at < cutoff, RememberedDevice.forgotten_at < cutoff)),
    }


class MfaPlugin:
    name = "mfa"
    #: The plugin's Alembic revisions (branch ``mfa``): the core migrates them with its own.
    migrations = Path(__file__).resolve().parent / "migrations" / "versions"
    default_config: dict[str, tuple[Any, type]] = {
        "IDP_MFA_REQUIRED_FROM": ("2025-03-06", str),
        "IDP_PASSCODE_MAX_ATTEMPTS": (5, int),
        "IDP_MFA_MAX_FAILURES": (10, int),
        "IDP_MFA_LOCKOUT_SECONDS": (15 * 60, int),
        # Failures of one kind of factor in a row, cool-downs or not (NIST SP 800-63B).
        "IDP_MFA_MAX_TOTAL_FAILURES": (100, int),
        "IDP_REMEMBER_DEVICE_DAYS": (30, int),
        "IDP_EMAIL_LINK_MINUTES": (30, int),
    }

    def init_app(self, app: Flask, registry: PluginRegistry) -> None:
        from plugins.mfa import models  # noqa: F401 - the tables
        from plugins.mfa.cli import mfa_cli
        from plugins.mfa.pages import bp
        from plugins.mfa.policy import ACR_LEVELS
        from plugins.mfa.steps import STEPS

        _check_cutoff(app.config["IDP_MFA_REQUIRED_FROM"])
        _check_ranges(app.config)
        for step in STEPS:
            registry.add_step(step)
        for level in ACR_LEVELS:
            registry.add_acr_level(level)
        registry.add_blueprint(bp)
        registry.add_cli_group(mfa_cli)
        registry.add_client_setting(ClientSetting(
            name="mfa_policy",
            options=[click.Option(["--mfa-policy"], type=click.Choice(["always", "cohort"]),
                                  help="MFA for every account, or per the account's cohort.")],
            apply=_apply_policy, default="cohort"))
        registry.add_client_setting(ClientSetting(
            name="remembered_devices",
            options=[click.Option(["--remembered-devices/--no-remembered-devices"],
                                  default=None,
                                  help="Whether a remembered device may skip the passcode.")],
            apply=_apply_devices, default=True))
        registry.add_encrypted_column(models.MfaFactor.secret_encrypted)
        password_changed.connect(_forget_devices_of, app)
        sign_in_progress_discarded.connect(_revoke_codes_of, app)
        account_email_verified.connect(_take_verified_account_email, app)
        notice_addresses.connect(_mfa_notice_address, app)
        registry.add_prune(_prune_statements)
        from plugins.mfa import account

        for section in account.SECTIONS:
            registry.add_account_section(section)
        registry.add_account_guard(account.guard)
        registry.add_account_fresh_check(account.fresh_check)
        registry.add_account_intent(account.INTENT_MODIFY)
        registry.add_account_intent(account.INTENT_ENROLL)
        registry.add_event_phrases(account.EVENT_PHRASES)


plugin = MfaPlugin()
