"""The challenge: Multifactor Authentication (MFA) with the factor chosen, its answer
checked, and what a pass records. The passcode is sent when the sign-in arrives here
(``ChallengeStep.arrive``) or when another method is chosen (its button, a POST that then
redirects to the page), never by showing the page."""

from __future__ import annotations

from flask import flash, redirect, request, url_for

from idp.plugin_api import audit, continue_sign_in, db, load_interaction, utcnow
from plugins.mfa import challenges, lockout, passcodes, policy
from plugins.mfa import metrics as mfa_metrics
from plugins.mfa.factors import FACTORS, RecoveryFactor
from plugins.mfa.forms import AnotherMethodForm, PasscodeForm, ReplaceFactorForm, ResendForm
from plugins.mfa.models import MfaFactor
from plugins.mfa.pages.common import (
    bp,
    failure_message,
    locked_error,
    notify,
    page,
    passed,
)
from plugins.mfa.progress import progress
from plugins.mfa.steps import ChallengeStep, ReplaceFactorStep


@bp.route("/challenge/<pending_id>", methods=["GET", "POST"])
def challenge(pending_id: str):
    ctx = load_interaction(pending_id, serves=ChallengeStep.name)
    kinds, rows = challenges.available(ctx)
    if not kinds:
        # No factor left (an MFA reset meanwhile): the pipeline decides.
        return continue_sign_in(ctx.pending)
    current = progress(ctx)
    if request.args.get("modify") == "1" and not current.modify_requested:
        current.update(modify_requested=True)
        audit.record("mfa_modify_requested", user_id=ctx.user.id,
                     client_id=ctx.client.client_id)
        db.session.commit()
    kind = challenges.chosen(ctx, kinds)
    factor, row = FACTORS[kind], rows.get(kind)
    destination = row.destination if row is not None else None
    form, info = PasscodeForm(), None
    form.passcode.label.text = factor.answer_label
    error = locked_error(ctx, kind, "challenge")
    if error is None and request.method == "POST":
        if form.validate_on_submit():
            ok, outcome = factor.check(ctx.user.id, ctx.pending.id, row, form.passcode.data,
                                       "challenge")
            mfa_metrics.checked(kind, "challenge",
                                "success" if ok else outcome or "wrong_code")
            if ok:
                return _challenge_passed(ctx, kind, row, form.remember.data)
            error = failure_message(ctx, outcome)
    elif error is None and factor.sends_code:
        if passcodes.live_code(ctx.user.id, ctx.pending.id, kind, "challenge",
                               destination) is not None:
            info = challenges.STILL_VALID
        else:
            # Showing the page sends nothing: the code sent on arrival has expired or was
            # replaced (or could not be sent, as the page says).
            info = "Select Resend to get a new passcode."
    db.session.commit()
    return page("mfa/passcode.html", ctx, form=form, resend_form=ResendForm(prefix="r"),
                 error=error, info=info, where=factor.describe(destination), kind=kind,
                 instructions=factor.instructions(destination),
                 one_time_code=factor.one_time_code,
                 resend_url=url_for("mfa.resend", pending_id=pending_id)
                 if factor.sends_code and not lockout.is_blocked(ctx.user.id, kind) else None,
                 others=[(k, FACTORS[k]) for k in kinds if k != kind],
                 method_form=AnotherMethodForm(prefix="m"),
                 show_modify=not current.modify_requested, challenge=True,
                 modify_requested=current.modify_requested)


@bp.route("/challenge/<pending_id>/method", methods=["POST"])
def another_method(pending_id: str):
    """Use another method: the choice is kept and, for a factor that sends one, its passcode
    sent; then the challenge page is shown at its own address, which sends nothing however
    often it is shown."""
    ctx = load_interaction(pending_id, serves=ChallengeStep.name)
    form = AnotherMethodForm(prefix="m")
    kinds, rows = challenges.available(ctx)
    if form.validate_on_submit() and form.factor.data in kinds:
        error = challenges.start(ctx, challenges.chosen(ctx, kinds, form.factor.data), rows)
        if error:
            flash(error, "error")
    db.session.commit()
    return redirect(url_for("mfa.challenge", pending_id=pending_id))


def _challenge_passed(ctx, kind: str, row: MfaFactor | None, remember: bool):
    if row is not None:
        row.last_used_at = utcnow()
    if kind == RecoveryFactor.kind:
        # The other methods may be lost (a phone): the sign-in asks for a new one.
        lockout.account_for(ctx.user.id).recovery_used_at = utcnow()
    passed(ctx, kind, remember, challenge_factor=kind, code_purpose=None)
    audit.record("mfa_challenge_passed", user_id=ctx.user.id, client_id=ctx.client.client_id,
                 factor=kind)
    db.session.commit()
    template, context = FACTORS[kind].passed_notice(ctx.user.id)
    notify(ctx, template, context, emails=[policy.mfa_email(ctx.user) or ctx.user.email])
    return continue_sign_in(ctx.pending)


# --- after a sign-in with a recovery code ---------------------------------------------------


@bp.route("/replace/<pending_id>", methods=["GET", "POST"])
def replace_factor(pending_id: str):
    """A recovery code signed the account in: set up a new method now (Modify MFA Options),
    or Not Now (the next sign-in asks again)."""
    ctx = load_interaction(pending_id, serves=ReplaceFactorStep.name)
    form = ReplaceFactorForm()
    if form.validate_on_submit():
        if form.not_now.data:
            progress(ctx).update(replacement_answered=True)
            audit.record("mfa_replacement_postponed", user_id=ctx.user.id,
                         client_id=ctx.client.client_id)
        else:
            progress(ctx).update(replacement_answered=True, modify_requested=True)
            audit.record("mfa_modify_requested", user_id=ctx.user.id,
                         client_id=ctx.client.client_id, reason="recovery_code_used")
        return continue_sign_in(ctx.pending)
    return page("mfa/replace_factor.html", ctx, form=form,
                remaining=RecoveryFactor.remaining(ctx.user.id))
