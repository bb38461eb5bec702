"""Enrollment: the offer (Enroll in MFA / Not Now), the method choice, a phone or an
authentication app set up, the passcode that confirms it, and Resend."""

from __future__ import annotations

from flask import flash, redirect, url_for

from idp.plugin_api import (
    PhoneNumberError,
    audit,
    db,
    decrypt,
    encrypt,
    load_interaction,
    normalize_us_phone,
    utcnow,
)
from plugins.mfa import lockout, passcodes, policy
from plugins.mfa import metrics as mfa_metrics
from plugins.mfa.factors import ENROLLABLE, FACTORS, TotpFactor
from plugins.mfa.forms import MethodForm, OfferForm, PasscodeForm, PhoneForm, ResendForm
from plugins.mfa.pages.common import (
    after_setup,
    bp,
    factor_row,
    failure_message,
    locked_error,
    login_first,
    notify,
    page,
    passed,
    resume,
    save_factor,
    send_code,
    setup_interaction,
    setup_purpose,
)
from plugins.mfa.steps import state, update_state

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
    ctx = load_interaction(pending_id)
    if ctx.user is None:
        return login_first(ctx)
    reason, optional = policy.enrollment_reason(ctx)
    form = OfferForm()
    if form.validate_on_submit():
        if form.not_now.data and optional:
            update_state(ctx, not_now=True)
            audit.record("mfa_not_now", user_id=ctx.user.id, client_id=ctx.client.client_id,
                         at=utcnow().isoformat())
        else:
            update_state(ctx, enrolling=True)
            audit.record("mfa_enrollment_started", user_id=ctx.user.id,
                         client_id=ctx.client.client_id, reason=reason)
        return resume(ctx)
    cutoff = policy.required_from().strftime("%B %-d, %Y")
    message = REASONS[reason].format(cutoff=cutoff, app=ctx.client.label)
    return page("mfa/offer.html", ctx, form=form, optional=optional, message=message)




@bp.route("/enroll/<pending_id>", methods=["GET", "POST"])
def enroll(pending_id: str):
    ctx, purpose, elsewhere = setup_interaction(pending_id)
    if elsewhere is not None or purpose != "enroll":
        return elsewhere or resume(ctx)
    form = MethodForm()
    kinds = ENROLLABLE
    if policy.ACR_AAL2 in ctx.acr_request.essential:
        # The client insists on AAL2: offer only the factors that can give it.
        kinds = [k for k in ENROLLABLE if FACTORS[k].aal2]
    form.method.choices = [(k, FACTORS[k].label) for k in kinds]
    error = None
    if form.validate_on_submit():
        kind = form.method.data
        if kind == "sms":
            return redirect(url_for("mfa.phone", pending_id=pending_id))
        if kind == "totp":
            return redirect(url_for("mfa.app", pending_id=pending_id))
        error = send_code(ctx, "email", policy.mfa_email(ctx.user), "enroll")
        if error is None:
            return redirect(url_for("mfa.passcode", pending_id=pending_id))
    return page("mfa/choose_method.html", ctx, form=form, error=error)


@bp.route("/phone/<pending_id>", methods=["GET", "POST"])
def phone(pending_id: str):
    """Verify Your Phone Number (enrollment, or a new number from Modify MFA Options)."""
    ctx, purpose, elsewhere = setup_interaction(pending_id)
    if elsewhere is not None:
        return elsewhere
    form = PhoneForm()
    error = None
    if form.validate_on_submit():
        try:
            number = normalize_us_phone(form.phone.data)
        except PhoneNumberError as exc:
            form.phone.errors.append(str(exc))
        else:
            error = send_code(ctx, "sms", number, purpose)
            if error is None:
                return redirect(url_for("mfa.passcode", pending_id=pending_id))
    return page("mfa/phone.html", ctx, form=form, error=error, purpose=purpose)


@bp.route("/passcode/<pending_id>", methods=["GET", "POST"])
def passcode(pending_id: str):
    """The passcode sent while enrolling or changing a factor."""
    ctx = load_interaction(pending_id)
    if ctx.user is None:
        return login_first(ctx)
    current = state(ctx)
    kind, destination = current.get("code_factor"), current.get("code_destination")
    purpose = current.get("code_purpose")
    if (purpose not in ("enroll", "modify") or kind not in ("sms", "email")
            or purpose != setup_purpose(ctx)):
        return resume(ctx)
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
                 error=error, where=FACTORS[kind].describe(destination), kind=kind,
                 resend_url=url_for("mfa.resend", pending_id=pending_id),
                 other_number_url=url_for("mfa.phone", pending_id=pending_id)
                 if kind == "sms" else None, show_modify=False,
                 modify_cancel=purpose == "modify")


def _factor_confirmed(ctx, kind: str, destination: str, purpose: str, remember: bool):
    old = factor_row(ctx.user.id, kind)
    old_destination = old.destination if old is not None else None
    save_factor(ctx, kind, destination=destination)
    passed(ctx, kind, remember, enrolling=False, code_purpose=None,
            **({"modify_requested": False} if purpose == "modify" else {}))
    db.session.commit()
    mfa_email = policy.mfa_email(ctx.user)
    if purpose == "modify" and kind == "sms" and old_destination != destination:
        notify(ctx, "mfa_contact_changed", {"what": "phone number",
                                             "new_value": FACTORS["sms"].describe(destination)},
                emails=[mfa_email or ctx.user.email], phones=[old_destination],
                sms_text="The phone number for your multifactor authentication was changed.")
    else:
        notify(ctx, "mfa_method_added", {"method": FACTORS[kind].label},
                emails=[mfa_email or ctx.user.email])
    return after_setup(ctx)


@bp.post("/resend/<pending_id>")
def resend(pending_id: str):
    """Resend: a new code to the same destination; the old code dies."""
    ctx = load_interaction(pending_id)
    if ctx.user is None:
        return login_first(ctx)
    form = ResendForm(prefix="r")
    current = state(ctx)
    kind, destination = current.get("code_factor"), current.get("code_destination")
    purpose = current.get("code_purpose") or "challenge"
    target = "mfa.challenge" if purpose == "challenge" else "mfa.passcode"
    if lockout.locked_until(ctx.user.id) or lockout.is_blocked(ctx.user.id, kind):
        pass  # no code during a cool-down or for a blocked factor: the page says why
    elif form.validate_on_submit() and kind in ("sms", "email") and destination:
        error = send_code(ctx, kind, destination, purpose)
        flash(error or f"We sent a new passcode to {FACTORS[kind].describe(destination)}.",
              "error" if error else "info")
    return redirect(url_for(target, pending_id=pending_id))


@bp.route("/app/<pending_id>", methods=["GET", "POST"])
def app(pending_id: str):
    """Set up an authentication app: QR code and secret, then a code to confirm."""
    ctx, purpose, elsewhere = setup_interaction(pending_id)
    if elsewhere is not None:
        return elsewhere
    factor: TotpFactor = FACTORS["totp"]
    current = state(ctx)
    if not current.get("totp_secret"):
        update_state(ctx, totp_secret=encrypt(factor.new_secret()))
        db.session.commit()
    secret = decrypt(state(ctx)["totp_secret"])
    form = PasscodeForm()
    form.passcode.label.text = "Code from your app"
    error = locked_error(ctx, "totp", purpose)
    if error is None and form.validate_on_submit():
        step = factor.matching_step(secret, form.passcode.data)
        mfa_metrics.checked("totp", purpose, "wrong_code" if step is None else "success")
        if step is not None:
            save_factor(ctx, "totp", secret_encrypted=factor.encrypt_secret(secret),
                         last_step=step)
            passed(ctx, "totp", form.remember.data, enrolling=False, totp_secret=None,
                    **({"modify_requested": False} if purpose == "modify" else {}))
            db.session.commit()
            notify(ctx, "mfa_method_added", {"method": factor.label},
                    emails=[policy.mfa_email(ctx.user) or ctx.user.email])
            return after_setup(ctx)
        error = failure_message(ctx, None).replace("passcode", "code")
    uri = factor.provisioning_uri(secret, ctx.user.username)
    return page("mfa/app.html", ctx, form=form, error=error, secret=secret,
                 qr=factor.qr_svg(uri), modify_cancel=purpose == "modify")


