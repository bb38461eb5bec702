"""Modify MFA Options: reached from the challenge once it is passed; a phone, an
email, an app or new recovery codes; Cancel finishes the sign-in."""

from __future__ import annotations

from flask import redirect, request, url_for
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from idp.plugin_api import InteractionError, audit, continue_sign_in, db, load_interaction
from plugins.mfa.factors import FACTORS, RecoveryFactor
from plugins.mfa.forms import RECOVERY_OPTION, ModifyForm
from plugins.mfa.pages.common import bp, page, recovery_codes_page
from plugins.mfa.pages.email import email_page
from plugins.mfa.progress import progress
from plugins.mfa.steps import ModifyStep


def _option_pages() -> dict[str, tuple[str, str]]:
    """Each factor's option on Modify MFA Options: value → (label, the page that changes
    it). Recovery codes are made at once, on this page."""
    return {f.modify_option: (f.modify_label, f.modify_endpoint) for f in FACTORS.values()
            if f.modify_endpoint}

# --- Modify MFA Options -------------------------------------------------------------------


@bp.route("/modify/<pending_id>", methods=["GET", "POST"])
def modify(pending_id: str):
    ctx = load_interaction(pending_id, serves=ModifyStep.name)
    pages = _option_pages()
    form = ModifyForm()
    form.option.choices = [(value, label) for value, (label, _) in pages.items()]
    form.option.choices.append(RECOVERY_OPTION)
    if request.method == "POST" and request.form.get("cancel"):
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError:
            raise InteractionError("This page was open too long. Go back and try again.",
                                   title="Page expired") from None
        progress(ctx).update(modify_requested=False)
        audit.record("mfa_modify_cancelled", user_id=ctx.user.id,
                     client_id=ctx.client.client_id)
        return continue_sign_in(ctx.pending)
    if form.validate_on_submit():
        option = form.option.data
        if option in pages:
            progress(ctx).update(totp_secret=None)  # a new app gets a new secret
            db.session.commit()
            return redirect(url_for(pages[option][1], pending_id=pending_id))
        codes = RecoveryFactor.generate(ctx.user.id)
        progress(ctx).update(modify_requested=False)
        audit.record("mfa_recovery_codes_regenerated", user_id=ctx.user.id,
                     client_id=ctx.client.client_id)
        db.session.commit()
        return recovery_codes_page(ctx, codes)
    return page("mfa/modify.html", ctx, form=form)


@bp.route("/modify-email/<pending_id>", methods=["GET", "POST"])
def modify_email(pending_id: str):
    ctx = load_interaction(pending_id, serves=ModifyStep.name)
    return email_page(ctx, "modify", "mfa.modify_email")


