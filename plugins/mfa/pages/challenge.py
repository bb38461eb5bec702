"""The challenge: Multifactor Authentication (MFA) with the factor chosen, its
passcode or code checked, and what a pass records."""

from __future__ import annotations

from flask import request, url_for

from idp.plugin_api import audit, db, load_interaction, utcnow
from plugins.mfa import lockout, passcodes, policy
from plugins.mfa import metrics as mfa_metrics
from plugins.mfa.factors import FACTORS, RecoveryFactor
from plugins.mfa.forms import PasscodeForm, ResendForm
from plugins.mfa.models import MfaFactor
from plugins.mfa.pages.common import (
    bp,
    failure_message,
    locked_error,
    login_first,
    notify,
    page,
    passed,
    resume,
    send_code,
)
from plugins.mfa.steps import state, update_state

# --- the challenge ------------------------------------------------------------------------


def _available(user_id: int) -> tuple[list[str], dict[str, MfaFactor]]:
    """The factors a challenge may offer, in order, and the user's factor rows by kind.

    A kind blocked after too many failures in a row is not offered. On a POST it stays in
    the list, last, so that an answer typed on a page shown before the block is refused as
    such (see :func:`locked_error`) rather than checked as a code of another factor. When
    every factor is blocked, one of them is kept (one that meets AAL2 first) for the page to
    say what to do."""
    rows = {f.kind: f for f in policy.enrolled_factors(user_id)}
    kinds = [k for k in ("sms", "email", "totp") if k in rows]
    if RecoveryFactor.remaining(user_id):
        kinds.append("recovery")
    blocked = lockout.blocked_kinds(user_id) if kinds else set()
    if not blocked:
        return kinds, rows
    usable = [k for k in kinds if k not in blocked]
    if request.method == "POST":
        return usable + [k for k in kinds if k in blocked], rows
    return usable or sorted(kinds, key=lambda k: not FACTORS[k].aal2)[:1], rows


@bp.route("/challenge/<pending_id>", methods=["GET", "POST"])
def challenge(pending_id: str):
    ctx = load_interaction(pending_id)
    if ctx.user is None:
        return login_first(ctx)
    available, rows = _available(ctx.user.id)
    if policy.aal2_step_up(ctx):
        # Only a factor that meets AAL2 ends this challenge: offer no other.
        available = [k for k in available if FACTORS[k].aal2]
    if not available:
        return resume(ctx)  # no factor left (an MFA reset meanwhile): the pipeline decides
    current = state(ctx)
    wanted = request.args.get("factor")
    kind = wanted if wanted in available else current.get("challenge_factor")
    if kind not in available:
        kind = available[0]
    if request.args.get("modify") == "1":
        update_state(ctx, modify_requested=True)
        audit.record("mfa_modify_requested", user_id=ctx.user.id,
                     client_id=ctx.client.client_id)
    if current.get("challenge_factor") != kind:
        update_state(ctx, challenge_factor=kind)
    db.session.commit()
    factor = FACTORS[kind]
    row = rows.get(kind) if kind != "recovery" else None
    destination = row.destination if row is not None else None
    form, info = PasscodeForm(), None
    if kind == "recovery":
        form.passcode.label.text = "Recovery code"
    elif kind == "totp":
        form.passcode.label.text = "Code from your app"
    error = locked_error(ctx, kind, "challenge")
    if error is None and request.method == "POST":
        if form.validate_on_submit():
            ok, outcome = _check_challenge(ctx, kind, row, destination, form.passcode.data)
            mfa_metrics.checked(kind, "challenge",
                                "success" if ok else outcome or "wrong_code")
            if ok:
                return _challenge_passed(ctx, kind, row, form.remember.data)
            error = failure_message(ctx, outcome)
    elif error is None and factor.sends_code:
        live = passcodes.live_code(ctx.user.id, ctx.pending.id, kind, "challenge", destination)
        if live is not None and state(ctx).get("code_purpose") == "challenge":
            info = "The passcode already sent is still valid."
        else:
            error = send_code(ctx, kind, destination, "challenge")
    return page("mfa/passcode.html", ctx, form=form, resend_form=ResendForm(prefix="r"),
                 error=error, info=info, where=factor.describe(destination), kind=kind,
                 resend_url=url_for("mfa.resend", pending_id=pending_id)
                 if factor.sends_code and not lockout.is_blocked(ctx.user.id, kind) else None,
                 others=[(k, FACTORS[k]) for k in available if k != kind],
                 show_modify=not state(ctx).get("modify_requested"), challenge=True,
                 modify_requested=state(ctx).get("modify_requested"))


def _check_challenge(ctx, kind, row, destination, answer):
    """(passed, passcode outcome or None for the factors without passcodes)."""
    if kind in ("sms", "email"):
        outcome = passcodes.verify(ctx.user.id, ctx.pending.id, kind, "challenge", destination,
                                   answer)
        return outcome is passcodes.Outcome.OK, outcome
    if kind == "totp":
        return FACTORS["totp"].verify(row, answer), None
    return FACTORS["recovery"].verify(ctx.user.id, answer), None


def _challenge_passed(ctx, kind: str, row: MfaFactor | None, remember: bool):
    if row is not None:
        row.last_used_at = utcnow()
    passed(ctx, kind, remember, challenge_factor=kind, code_purpose=None)
    audit.record("mfa_challenge_passed", user_id=ctx.user.id, client_id=ctx.client.client_id,
                 factor=kind)
    db.session.commit()
    notice_to = [policy.mfa_email(ctx.user) or ctx.user.email]
    if kind == "recovery":
        remaining = RecoveryFactor.remaining(ctx.user.id)
        notify(ctx, "recovery_code_used", {"remaining": remaining}, emails=notice_to)
    else:
        notify(ctx, "new_device_sign_in",
                {"when": utcnow().strftime("%B %-d, %Y at %H:%M UTC")}, emails=notice_to)
    return resume(ctx)


