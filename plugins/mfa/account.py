"""The MFA plugin's part of the account page: who may see it (a second factor, or a
remembered device, where the account has MFA or must have it), the MFA Methods and
Remembered Devices sections, and their changes. Adding or changing a method goes through
the sign-in (the intent ``mfa_modify``: the challenge again, then Modify MFA Options, with
the same passcode and link checks as enrollment); setting MFA up through the enrollment
(``mfa_enroll``)."""

from __future__ import annotations

from flask import abort, flash, render_template

from idp.plugin_api import (
    AccountSection,
    account_is_fresh,
    account_return,
    account_session,
    account_sign_in,
    audit,
    db,
    describe_browser,
    mask_email,
)
from plugins.mfa import devices, lockout, policy
from plugins.mfa.factors import FACTORS, RecoveryFactor
from plugins.mfa.forms import AccountDevicesForm, AccountFactorForm
from plugins.mfa.models import MfaAccount, MfaFactor, RecoveryCode
from plugins.mfa.pages.common import bp, send_notices

INTENT_MODIFY = "mfa_modify"
INTENT_ENROLL = "mfa_enroll"
METHODS, DEVICES = "mfa-methods", "remembered-devices"

#: Recent Security Events: the plugin's events in plain words.
EVENT_PHRASES = {
    "mfa_challenge_passed": "Second factor passed",
    "mfa_factor_added": "MFA method added",
    "mfa_factor_changed": "MFA method changed",
    "mfa_factor_removed": "MFA method removed",
    "mfa_default_changed": "Default MFA method changed",
    "mfa_recovery_codes_regenerated": "New recovery codes made",
    "mfa_email_verified": "MFA email verified",
    "mfa_locked": "MFA paused after too many failed tries",
    "mfa_unblocked": "MFA method unblocked",
    "mfa_reset": "MFA reset by the help desk",
    "device_remembered": "New device remembered",
    "devices_forgotten": "Remembered devices forgotten",
}


def guard(session, client) -> bool:
    """The account page needs the second factor (or a remembered device) where the account
    has MFA; an account that must have MFA and has none sets it up first."""
    user = session.user
    if policy.is_enrolled(user.id):
        return policy.mfa_met(session, client)
    return not policy.enrollment_mandatory(user)


def fresh_check(session, since: int) -> bool:
    """A security change on the account page: where the account has MFA, a second factor
    checked since ``since`` (the password or a remembered device is not enough)."""
    if not policy.is_enrolled(session.user_id):
        return True
    return policy.second_factor_checked(session, since)


def _methods_section(user, session) -> str:
    factors = policy.enrolled_factors(user.id)
    account = db.session.get(MfaAccount, user.id)
    default = account.default_kind if account is not None else None
    if default not in {f.kind for f in factors}:
        default = factors[0].kind if factors else None
    mandatory = policy.enrollment_mandatory(user)
    removable = len(factors) > 1 or not mandatory
    blocked = lockout.blocked_kinds(user.id) if factors else set()
    rows = [{"kind": f.kind, "label": FACTORS[f.kind].label if f.kind in FACTORS else f.kind,
             "blocked": f.kind in blocked,
             "where": FACTORS[f.kind].mask(f.destination) if f.kind in FACTORS else None,
             "added": f.created_at, "used": f.last_used_at, "default": f.kind == default}
            for f in factors]
    return render_template(
        "mfa/account_methods.html", methods=rows, removable=removable,
        recovery_left=RecoveryFactor.remaining(user.id) if factors else 0,
        mfa_email=mask_email(mfa_email) if (mfa_email := policy.mfa_email(user)) else None,
        form=AccountFactorForm(prefix="mfa"))


def _devices_section(user, session) -> str:
    return render_template("mfa/account_devices.html", devices=devices.devices_of(user.id),
                           describe=describe_browser,
                           form=AccountDevicesForm(prefix="devices"))


SECTIONS = [AccountSection("MFA Methods", METHODS, _methods_section),
            AccountSection("Remembered Devices", DEVICES, _devices_section)]


@bp.route("/account/methods", methods=["POST"])
def account_methods():
    """Remove a method (after a fresh check; never the last one where MFA is mandatory),
    or make one the default (the challenge starts with it)."""
    session = account_session()
    form = AccountFactorForm(prefix="mfa")
    if not form.validate_on_submit():
        abort(400)
    user, kind = session.user, form.kind.data
    row = db.session.scalar(db.select(MfaFactor).filter_by(user_id=user.id, kind=kind))
    if row is None:
        flash("That method is not set up.", "error")
        return account_return(METHODS)
    if form.make_default.data:
        account = lockout.account_for(user.id)
        account.default_kind = kind
        audit.record("mfa_default_changed", user_id=user.id, factor=kind)
        db.session.commit()
        flash(f"{FACTORS[kind].label if kind in FACTORS else kind} is now your default "
              "method.", "info")
        return account_return(METHODS)
    if not account_is_fresh(session):
        return account_sign_in(fresh=True, then=METHODS)
    # Two removals at once (tabs, instances) must not both see the other method: the
    # account's MFA row is locked (written) before the methods are counted.
    account = lockout.account_for(user.id)
    db.session.commit()
    db.session.execute(db.update(MfaAccount).where(MfaAccount.user_id == user.id)
                       .values(failures=MfaAccount.failures))
    count = db.session.scalar(db.select(db.func.count()).select_from(MfaFactor)
                              .where(MfaFactor.user_id == user.id))
    if count <= 1 and policy.enrollment_mandatory(user):
        db.session.rollback()
        flash("Your account must keep at least one MFA method. Add another one before you "
              "remove this one.", "error")
        return account_return(METHODS)
    deleted = db.session.execute(db.delete(MfaFactor).where(MfaFactor.id == row.id)).rowcount
    if not deleted:
        db.session.rollback()
        return account_return(METHODS)  # removed by another request meanwhile
    if account.default_kind == kind:  # read again: the commit above expired it
        account.default_kind = None
    if count <= 1:
        # No method left: the recovery codes would open nothing.
        db.session.execute(db.delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        account.enrolled_at = None
    devices.forget(user.id, None, reason="factor_removed")
    label = FACTORS[kind].label if kind in FACTORS else kind
    audit.record("mfa_factor_removed", user_id=user.id, factor=kind, source="account_page")
    db.session.commit()
    send_notices(user.id, None, "mfa_method_removed", {"method": label},
                 emails=[user.email, policy.mfa_email(user)])
    flash(f"{label} was removed from your MFA methods.", "info")
    return account_return(METHODS)


@bp.route("/account/devices", methods=["POST"])
def account_devices():
    session = account_session()
    form = AccountDevicesForm(prefix="devices")
    if not form.validate_on_submit():
        abort(400)
    device_id = None
    if not form.forget_all.data:
        if not form.device_id.data:
            abort(400)
        device_id = int(form.device_id.data)  # at most nine digits (the form's rule)
    count = devices.forget(session.user_id, device_id, reason="user_request")
    db.session.commit()
    flash(f"{count} device{'s' if count != 1 else ''} forgotten.", "info")
    return account_return(DEVICES)
