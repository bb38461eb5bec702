"""Modify MFA Options: reached from the challenge once it is passed; a phone, an
email, an app or new recovery codes; Cancel finishes the sign-in."""

from __future__ import annotations

from flask import redirect, request, url_for
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from idp.plugin_api import InteractionError, audit, db, load_interaction
from plugins.mfa.factors import RecoveryFactor
from plugins.mfa.forms import ModifyForm
from plugins.mfa.pages.common import (
    bp,
    login_first,
    page,
    recovery_codes_page,
    resume,
    setup_purpose,
)
from plugins.mfa.pages.email import email_page
from plugins.mfa.steps import modify_allowed, update_state

# --- Modify MFA Options -------------------------------------------------------------------


@bp.route("/modify/<pending_id>", methods=["GET", "POST"])
def modify(pending_id: str):
    ctx = load_interaction(pending_id)
    if ctx.user is None:
        return login_first(ctx)
    if not modify_allowed(ctx):
        return resume(ctx)
    form = ModifyForm()
    if request.method == "POST" and request.form.get("cancel"):
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError:
            raise InteractionError("This page was open too long. Go back and try again.",
                                   title="Page expired") from None
        update_state(ctx, modify_requested=False)
        audit.record("mfa_modify_cancelled", user_id=ctx.user.id,
                     client_id=ctx.client.client_id)
        return resume(ctx)
    if form.validate_on_submit():
        option = form.option.data
        if option == "phone":
            return redirect(url_for("mfa.phone", pending_id=pending_id))
        if option == "email":
            return redirect(url_for("mfa.modify_email", pending_id=pending_id))
        if option == "totp":
            update_state(ctx, totp_secret=None)
            db.session.commit()
            return redirect(url_for("mfa.app", pending_id=pending_id))
        codes = RecoveryFactor.generate(ctx.user.id)
        update_state(ctx, modify_requested=False)
        audit.record("mfa_recovery_codes_regenerated", user_id=ctx.user.id,
                     client_id=ctx.client.client_id)
        db.session.commit()
        return recovery_codes_page(ctx, codes)
    return page("mfa/modify.html", ctx, form=form)


@bp.route("/modify-email/<pending_id>", methods=["GET", "POST"])
def modify_email(pending_id: str):
    ctx = load_interaction(pending_id)
    if ctx.user is None:
        return login_first(ctx)
    if setup_purpose(ctx) != "modify":
        return resume(ctx)
    return email_page(ctx, "modify", "mfa.modify_email")


