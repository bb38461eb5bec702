"""The account's remembered devices and the MFA FAQ."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from idp.plugin_api import Client, InteractionError, current_session, db
from plugins.mfa import devices, policy
from plugins.mfa.forms import ForgetDevicesForm
from plugins.mfa.pages.common import bp

# --- account pages ------------------------------------------------------------------------


@bp.route("/devices", methods=["GET", "POST"])
def devices_page():
    """The account's remembered devices: forget one, or all."""
    session = current_session()
    if session is None:
        raise InteractionError(
            "Sign in to one of the applications first, then come back to this page.",
            title="Sign in first", status=401)
    if not (policy.second_factor_checked(session) or policy.remembered_device_used(session)):
        # A password alone (someone who learnt it) must not see or change the devices.
        raise InteractionError(
            "To manage your remembered devices, sign in with your second factor (a passcode "
            "or your authentication app) first, then come back to this page.",
            title="Multifactor authentication needed", status=403)
    user_id = session.user_id
    form = ForgetDevicesForm()
    if form.validate_on_submit():
        device_id = request.form.get("device_id", type=int)
        count = devices.forget(user_id, None if form.forget_all.data else device_id,
                               reason="user_request")
        db.session.commit()
        flash(f"{count} device{'s' if count != 1 else ''} forgotten.")
        return redirect(url_for("mfa.devices_page"))
    return render_template("mfa/devices.html", form=form, devices=devices.devices_of(user_id),
                           client=None)


@bp.get("/faq")
def faq():
    client = None
    client_id = request.args.get("client_id")
    if client_id and len(client_id) <= 64 and "\x00" not in client_id:
        client = db.session.scalar(db.select(Client).filter_by(client_id=client_id))
    cutoff = policy.required_from().strftime("%B %-d, %Y")
    return render_template("mfa/faq.html", client=client, cutoff=cutoff)
