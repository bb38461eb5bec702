"""What every MFA page shares: the blueprint, the set-up purpose, passcodes checked,
lockouts, notices and factors saved."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, current_app, render_template, request

from idp.plugin_api import (
    DeliveryError,
    PhoneNumberError,
    audit,
    continue_sign_in,
    db,
    record_authentication,
    resume_url,
    send_email,
    send_sms,
    utcnow,
)
from plugins.mfa import devices, lockout, passcodes, policy
from plugins.mfa import metrics as mfa_metrics
from plugins.mfa.factors import FACTORS, RecoveryFactor
from plugins.mfa.models import MfaFactor
from plugins.mfa.progress import progress
from plugins.mfa.steps import ChooseMethodStep, ModifyStep

#: The steps whose pages set a factor up: enrollment's method choice, or Modify MFA Options.
SETUP_STEPS = (ChooseMethodStep.name, ModifyStep.name)

log = logging.getLogger(__name__)

# The plugin's pages and emails are its own (plugins/mfa/templates: mfa/, email/).
bp = Blueprint("mfa", __name__, url_prefix="/mfa",
               template_folder=str(Path(__file__).resolve().parent.parent / "templates"))


@bp.after_request
def _never_cached(response):
    """Every MFA page shows a passcode form, a secret (app set-up key, recovery codes) or a
    link's outcome: no browser or proxy may keep a copy."""
    response.headers["Cache-Control"] = "no-store"
    return response


# --- helpers ------------------------------------------------------------------------------


def setup_purpose(ctx) -> str:
    """Why a set-up page (served for ``SETUP_STEPS``) sets a factor up: ``modify`` or
    ``enroll``. A password alone never adds a factor: the engine shows these pages only
    while enrolling (the MFA email verified first) or after Modify MFA Options was asked
    for and the challenge passed."""
    return "modify" if ctx.step.name == ModifyStep.name else "enroll"


def page(template: str, ctx, **values):
    return render_template(template, client=ctx.client, pending=ctx.pending, **values)


def passed(ctx, kind: str, remember: bool, **extra_state) -> None:
    """A factor was checked: record it in the SSO session (the session id rotates)."""
    record_authentication(ctx.user, FACTORS[kind].event())
    lockout.record_success(ctx.user.id)
    if remember:
        devices.remember(ctx.user.id)
    progress(ctx).update(challenge_passed=True, **extra_state)


def failure_message(ctx, outcome: passcodes.Outcome | None,
                     attempt: lockout.Attempt | None = None) -> str:
    """Record a failed check, the ``attempt`` admitted for it (by default the one
    :func:`locked_error` admitted); the message says what to do next. A cool-down or a
    block that starts now is also told to the user by email."""
    attempt = attempt or ctx.extras.pop("mfa_attempt", None)
    if outcome is passcodes.Outcome.EXPIRED:
        # No live code to guess at (expired, or just used by a parallel submission of the
        # right code): not a failure of the person.
        if attempt is not None:
            lockout.release(attempt)
            db.session.commit()
        return "This passcode has expired or was replaced. Select Resend to get a new one."
    if attempt is None:  # checked without an admission: counted now, toward the cool-down
        attempt = lockout.admit_attempt(ctx.user.id, None)
    started = (lockout.record_failure(attempt, client_id=ctx.client.client_id)
               if attempt.admitted else None)
    db.session.commit()
    if not attempt.admitted:
        return locked_message(ctx)
    if started is not None:
        kinds = {f.kind for f in policy.enrolled_factors(ctx.user.id)}
        if RecoveryFactor.remaining(ctx.user.id):
            kinds.add(lockout.RECOVERY)
        until = started.cool_down_until
        minutes = lockout.minutes_left(until) if until else None
        if started.blocked:
            template = "mfa_blocked"
            context = {"method": lockout.METHOD_NAMES.get(started.blocked, started.blocked),
                       "recovery": started.blocked == lockout.RECOVERY, "minutes": minutes,
                       "others": bool(kinds - lockout.blocked_kinds(ctx.user.id))}
        else:
            template = "mfa_cool_down"
            context = {"minutes": minutes,
                       "failures": current_app.config["IDP_MFA_MAX_FAILURES"]}
        notify(ctx, template, context, emails=[policy.mfa_email(ctx.user) or ctx.user.email])
        return locked_message(ctx, attempt.kind)
    if outcome is passcodes.Outcome.EXHAUSTED:
        return "Too many wrong tries for this passcode. Select Resend to get a new one."
    return "The passcode you entered is not correct. Check it and try again."


def locked_message(ctx, kind: str | None = None) -> str:
    """Why a code cannot be checked now, and what to do: the account cools down, or
    ``kind`` is blocked after too many failures in a row (another method, or the help
    desk; only the help desk when every method is blocked, or for recovery codes)."""
    user_id = ctx.user.id
    support = ctx.client.help_contact or current_app.config["IDP_SUPPORT_CONTACT"]
    until = lockout.locked_until(user_id)
    minutes = (lockout.minutes_left(until) if until
               else current_app.config["IDP_MFA_LOCKOUT_SECONDS"] // 60)
    blocked = lockout.blocked_kinds(user_id) if kind is not None else set()
    if kind not in blocked:
        return (f"Too many failed attempts. For your security, try again in {minutes} "
                f"minutes, or contact {support}.")
    kinds = {f.kind for f in policy.enrolled_factors(user_id)}
    if RecoveryFactor.remaining(user_id):
        kinds.add(lockout.RECOVERY)
    if not kinds - blocked:
        return ("Too many failed attempts. For your security, every multifactor "
                "authentication (MFA) method of your account is blocked. Contact "
                f"{support} to unblock your account.")
    wait = f" in {minutes} minutes" if until else ""
    if kind == lockout.RECOVERY:
        return ("Too many failed attempts with recovery codes. For your security, they are "
                f"blocked, and only {support} can unblock them. Sign in with another "
                f"method{wait}.")
    return (f"Too many failed attempts with {lockout.METHOD_NAMES.get(kind, kind)}. For "
            f"your security, this method is blocked: sign in with another method{wait} to "
            f"unblock it, or contact {support}.")


def notify(ctx, template: str, context: dict, emails: list[str | None] = (),
            phones: list[str | None] = (), sms_text: str | None = None) -> None:
    """Security notices about a sign-in's user, branded for its client."""
    send_notices(ctx.user.id, ctx.client, template, context, emails, phones, sms_text)


def send_notices(user_id: int, client, template: str, context: dict,
                 emails: list[str | None] = (), phones: list[str | None] = (),
                 sms_text: str | None = None) -> None:
    """Security notices; a failed notice is logged, never an obstacle."""
    for address in dict.fromkeys(a for a in emails if a):
        try:
            send_email(address, template, context, kind="notice", user_id=user_id,
                       client=client)
        except DeliveryError as exc:
            log.warning("notice %s not sent: %s", template, exc.reason)
    for phone in dict.fromkeys(p for p in phones if p):
        try:
            send_sms(phone, "notice", {"text": sms_text}, kind="notice", user_id=user_id,
                     client=client)
        except (DeliveryError, PhoneNumberError) as exc:
            log.warning("SMS notice not sent: %s", exc)


def factor_row(user_id: int, kind: str) -> MfaFactor | None:
    return db.session.scalar(db.select(MfaFactor).filter_by(user_id=user_id, kind=kind))


def save_factor(ctx, kind: str, destination: str | None = None,
                 secret_encrypted: str | None = None, last_step: int = 0) -> MfaFactor:
    """Enroll or replace a factor; replacing one forgets every remembered device."""
    row = factor_row(ctx.user.id, kind)
    changed = row is not None
    if row is None:
        row = MfaFactor(user_id=ctx.user.id, kind=kind)
        db.session.add(row)
    row.destination, row.secret_encrypted, row.last_step = destination, secret_encrypted, last_step
    row.last_used_at = utcnow()
    account = lockout.account_for(ctx.user.id)
    account.enrolled_at = account.enrolled_at or utcnow()
    account.recovery_used_at = None  # a method set up: no need to ask for one any more
    if changed:
        devices.forget(ctx.user.id, None, reason="factor_changed")
    audit.record("mfa_factor_changed" if changed else "mfa_factor_added", user_id=ctx.user.id,
                 client_id=ctx.client.client_id, factor=kind)
    return row


def recovery_codes_page(ctx, codes: list[str]):
    """Show new recovery codes once; they are not stored anywhere in the clear."""
    response = current_app.make_response(
        page("mfa/recovery_codes.html", ctx, codes=codes, continue_url=resume_url(ctx.pending))
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def after_setup(ctx):
    """After a factor is set up: the first time, ten recovery codes; then on with sign-in."""
    if RecoveryFactor.remaining(ctx.user.id) == 0:
        codes = RecoveryFactor.generate(ctx.user.id)
        db.session.commit()
        return recovery_codes_page(ctx, codes)
    return continue_sign_in(ctx.pending)


def locked_error(ctx, kind: str, purpose: str) -> str | None:
    """None when a code of ``kind`` may be checked now, else the message saying why not:
    the account's cool-down, or ``kind`` blocked after too many failures in a row.

    On a POST this admits the check that follows (:func:`lockout.admit_attempt`, counted in
    this request's transaction, which holds the account's lock until it commits): the
    answer is checked only when this returns None, and :func:`failure_message` records a
    failure (a POST that checks nothing, its form invalid, ends without a commit and counts
    for nothing). A refused try is counted as ``locked`` and never checked."""
    if request.method != "POST":
        if lockout.locked_until(ctx.user.id) or lockout.is_blocked(ctx.user.id, kind):
            return locked_message(ctx, kind)
        return None
    attempt = lockout.admit_attempt(ctx.user.id, kind)
    if attempt.admitted:
        ctx.extras["mfa_attempt"] = attempt
        return None
    db.session.commit()  # nothing was counted; a cool-down may have started
    mfa_metrics.checked(kind, purpose, "locked")
    return locked_message(ctx, kind)
