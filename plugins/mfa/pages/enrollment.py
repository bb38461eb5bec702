"""Enrollment: the offer (Enroll in MFA / Not Now), the method choice, a phone or an
authentication app set up, the passcode that confirms it, and Resend."""

from __future__ import annotations

from flask import flash, redirect, url_for

from idp.plugin_api import (
    PhoneNumberError,
    audit,
    continue_sign_in,
    db,
    decrypt,
    encrypt,
    load_interaction,
    normalize_us_phone,
    utcnow,
)
from plugins.mfa import lockout, passcodes, policy
from plugins.mfa import metrics as mfa_metrics
from plugins.mfa.factors import ENROLLABLE, FACTORS, SmsFactor, TotpFactor
from plugins.mfa.forms import MethodForm, OfferForm, PasscodeForm, PhoneForm, ResendForm
from plugins.mfa.pages.common import (
    SETUP_STEPS,
    after_setup,
    bp,
    factor_row,
    failure_message,
    locked_error,
    notify,
    page,
    passed,
    save_factor,
    setup_purpose,
)
from plugins.mfa.progress import progress
from plugins.mfa.sending import send_code
from plugins.mfa.steps import ChallengeStep, ChooseMethodStep, EnrollOfferStep

# --- enrollment ---------------------------------------------------------------------------


REASONS = {
    "enrollment_required": "Accounts created on or after {cutoff} must use multifactor "
                           "authentication (MFA).",
    "client_policy": "{app} requires multifactor authentication (MFA) for every account.",
    "acr_not_met": "{app} asks for multifactor authentication (MFA) for this sign-in.",
    "enrollment_offer": "Protect your account with multifactor authentication (MFA): a "
                        "passcode from your phone or email when you sign in from a new device.",
}


@bp.route("/offer/<pending_id>", methods=["GET", "POST"])
def offer(pending_id: str):
    ctx = load_interaction(pending_id, serves=EnrollOfferStep.name)
    reason, optional = policy.enrollment_reason(ctx)
    form = OfferForm()
    if form.validate_on_submit():
        if form.not_now.data and optional:
            progress(ctx).update(not_now=True)
            audit.record("mfa_not_now", user_id=ctx.user.id, client_id=ctx.client.client_id,
                         at=utcnow().isoformat())
        else:
            progress(ctx).update(enrolling=True)
            audit.record("mfa_enrollment_started", user_id=ctx.user.id,
                         client_id=ctx.client.client_id, reason=reason)
        return continue_sign_in(ctx.pending)
    cutoff = policy.required_from().strftime("%B %-d, %Y")
    message = REASONS[reason].format(cutoff=cutoff, app=ctx.client.label)
    return page("mfa/offer.html", ctx, form=form, optional=optional, message=message)




@bp.route("/enroll/<pending_id>", methods=["GET", "POST"])
def enroll(pending_id: str):
    ctx = load_interaction(pending_id, serves=ChooseMethodStep.name)
    form = MethodForm()
    kinds = ENROLLABLE
    if policy.ACR_AAL2 in ctx.acr_request.essential:
        # The client insists on AAL2: offer only the factors that can give it.
        kinds = [k for k in ENROLLABLE if FACTORS[k].aal2]
    form.method.choices = [(k, FACTORS[k].label) for k in kinds]
    error = None
    if form.validate_on_submit():
        factor = FACTORS[form.method.data]
        if factor.setup_endpoint:
            return redirect(url_for(factor.setup_endpoint, pending_id=pending_id))
        # Set up by a passcode to the MFA email the person verified before this page.
        error = send_code(ctx, factor.kind, policy.mfa_email(ctx.user), "enroll")
        if error is None:
            return redirect(url_for("mfa.passcode", pending_id=pending_id))
    return page("mfa/choose_method.html", ctx, form=form, error=error)


@bp.route("/phone/<pending_id>", methods=["GET", "POST"])
def phone(pending_id: str):
    """Verify Your Phone Number (enrollment, or a new number from Modify MFA Options)."""
    ctx = load_interaction(pending_id, serves=SETUP_STEPS)
    purpose = setup_purpose(ctx)
    form = PhoneForm()
    error = None
    if form.validate_on_submit():
        try:
            number = normalize_us_phone(form.phone.data)
        except PhoneNumberError as exc:
            form.phone.errors.append(str(exc))
        else:
            error = send_code(ctx, SmsFactor.kind, number, purpose)
            if error is None:
                return redirect(url_for("mfa.passcode", pending_id=pending_id))
    return page("mfa/phone.html", ctx, form=form, error=error, purpose=purpose)


@bp.route("/passcode/<pending_id>", methods=["GET", "POST"])
def passcode(pending_id: str):
    """The passcode sent while enrolling or changing a factor."""
    ctx = load_interaction(pending_id, serves=SETUP_STEPS)
    current, purpose = progress(ctx), setup_purpose(ctx)
    kind, destination = current.code_factor, current.code_destination
    factor = FACTORS.get(kind)
    if current.code_purpose != purpose or factor is None or not factor.sends_code:
        # No passcode was sent for this set-up: back to where the sign-in stands.
        return continue_sign_in(ctx.pending)
    form = PasscodeForm()
    error = locked_error(ctx, kind, purpose)
    if error is None and form.validate_on_submit():
        outcome = passcodes.verify(ctx.user.id, ctx.pending.id, kind, purpose, destination,
                                   form.passcode.data)
        mfa_metrics.checked(kind, purpose, outcome)
        if outcome is passcodes.Outcome.OK:
            return _factor_confirmed(ctx, kind, destination, purpose, form.remember.data)
        error = failure_message(ctx, outcome)
    return page("mfa/passcode.html", ctx, form=form, resend_form=ResendForm(prefix="r"),
                 error=error, where=factor.describe(destination), kind=kind,
                 instructions=factor.instructions(destination),
                 one_time_code=factor.one_time_code,
                 resend_url=url_for("mfa.resend", pending_id=pending_id),
                 other_number_url=url_for(factor.setup_endpoint, pending_id=pending_id)
                 if factor.setup_endpoint else None, show_modify=False,
                 modify_cancel=purpose == "modify")


def _factor_confirmed(ctx, kind: str, destination: str, purpose: str, remember: bool):
    old = factor_row(ctx.user.id, kind)
    old_destination = old.destination if old is not None else None
    save_factor(ctx, kind, destination=destination)
    passed(ctx, kind, remember, enrolling=False, code_purpose=None,
            **({"modify_requested": False} if purpose == "modify" else {}))
    db.session.commit()
    mfa_email, factor = policy.mfa_email(ctx.user), FACTORS[kind]
    if purpose == "modify" and old_destination and old_destination != destination:
        notify(ctx, "mfa_contact_changed", {"what": factor.contact_name,
                                             "new_value": factor.describe(destination)},
                emails=[mfa_email or ctx.user.email],
                phones=[old_destination] if factor.notify_old_destination_by_sms else [],
                sms_text=f"The {factor.contact_name} for your multifactor authentication "
                         "was changed.")
    else:
        notify(ctx, "mfa_method_added", {"method": factor.label},
                emails=[mfa_email or ctx.user.email])
    return after_setup(ctx)


@bp.post("/resend/<pending_id>")
def resend(pending_id: str):
    """Resend: a new code to the same destination; the old code dies."""
    ctx = load_interaction(pending_id, serves=(ChallengeStep.name, *SETUP_STEPS))
    form = ResendForm(prefix="r")
    current = progress(ctx)
    kind, destination = current.code_factor, current.code_destination
    purpose = current.code_purpose or "challenge"
    target = "mfa.challenge" if purpose == "challenge" else "mfa.passcode"
    factor = FACTORS.get(kind)
    if factor is None or lockout.locked_until(ctx.user.id) or lockout.is_blocked(ctx.user.id,
                                                                                  kind):
        pass  # no code during a cool-down or for a blocked factor: the page says why
    elif form.validate_on_submit() and factor.sends_code and destination:
        error = send_code(ctx, kind, destination, purpose)
        flash(error or f"We sent a new passcode to {factor.describe(destination)}.",
              "error" if error else "info")
    return redirect(url_for(target, pending_id=pending_id))


@bp.route("/app/<pending_id>", methods=["GET", "POST"])
def app(pending_id: str):
    """Set up an authentication app: QR code and secret, then a code to confirm."""
    ctx = load_interaction(pending_id, serves=SETUP_STEPS)
    purpose = setup_purpose(ctx)
    factor: TotpFactor = FACTORS[TotpFactor.kind]
    current = progress(ctx)
    if not current.totp_secret:
        current.update(totp_secret=encrypt(factor.new_secret()))
        db.session.commit()
    secret = decrypt(current.totp_secret)
    form = PasscodeForm()
    form.passcode.label.text = "Code from your app"
    error = locked_error(ctx, factor.kind, purpose)
    if error is None and form.validate_on_submit():
        step = factor.matching_step(secret, form.passcode.data)
        mfa_metrics.checked(factor.kind, purpose, "wrong_code" if step is None else "success")
        if step is not None:
            save_factor(ctx, factor.kind, secret_encrypted=factor.encrypt_secret(secret),
                         last_step=step)
            passed(ctx, factor.kind, form.remember.data, enrolling=False, totp_secret=None,
                    **({"modify_requested": False} if purpose == "modify" else {}))
            db.session.commit()
            notify(ctx, "mfa_method_added", {"method": factor.label},
                    emails=[policy.mfa_email(ctx.user) or ctx.user.email])
            return after_setup(ctx)
        error = failure_message(ctx, None).replace("passcode", "code")
    uri = factor.provisioning_uri(secret, ctx.user.username)
    return page("mfa/app.html", ctx, form=form, error=error, secret=secret,
                 qr=factor.qr_svg(uri), modify_cancel=purpose == "modify")


