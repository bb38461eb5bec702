"""Verify Your Email: the link sent (and every earlier one revoked), the emailed link
itself, and what it may verify."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app, flash, redirect, render_template, request, url_for

from idp.plugin_api import (
    Client,
    DeliveryError,
    PendingAuthorization,
    ThrottledError,
    audit,
    browser_id,
    continue_sign_in,
    db,
    digest,
    issuer,
    load_interaction,
    mask_email,
    random_token,
    send_email,
    utcnow,
)
from plugins.mfa import devices, links, lockout, policy
from plugins.mfa.forms import ContinueForm, EmailForm, ResendForm, VerifyEmailChoiceForm
from plugins.mfa.models import EmailVerification, MfaFactor
from plugins.mfa.pages.common import bp, factor_row, page
from plugins.mfa.progress import progress
from plugins.mfa.steps import VerifyEmailStep

log = logging.getLogger(__name__)


def _link_url(token: str) -> str:
    # The token travels in the query string, which access logs leave out (see Makefile).
    return issuer() + url_for("mfa.email_link", token=token)


def _send_link(ctx, address: str, purpose: str) -> str | None:
    """Send a verification link to ``address``; every earlier unused link of the account
    dies with it (unless the send is refused: then the last link sent stays valid)."""
    token = random_token(24)
    minutes = current_app.config["IDP_EMAIL_LINK_MINUTES"]
    db.session.add(EmailVerification(
        user_id=ctx.user.id, pending_id=ctx.pending.id, address=address,
        token_digest=digest(token), expires_at=utcnow() + timedelta(minutes=minutes),
    ))
    current = progress(ctx)
    before = {"link_sent_to": current.link_sent_to, "link_purpose": current.link_purpose}
    current.update(link_sent_to=address, link_purpose=purpose)
    try:
        send_email(address, "verify_email", {"link": _link_url(token), "link_minutes": minutes},
                   kind="link", user_id=ctx.user.id, client=ctx.client)
    except DeliveryError as exc:
        # Nothing was sent: the page must not say it waits for this link.
        current.update(**before)
        links.revoke_token(digest(token))
        db.session.commit()
        if isinstance(exc, ThrottledError):
            return exc.user_message
        return (f"We couldn't send the email to {mask_email(address)} just now. Try again in "
                "a moment, or use a different email address. Nothing you have done so far is "
                "lost.")
    links.revoke_links_of_user(ctx.user.id, keep=digest(token))
    audit.record("mfa_email_link_sent", user_id=ctx.user.id, client_id=ctx.client.client_id,
                 to=mask_email(address), purpose=purpose)
    db.session.commit()
    return None


def email_page(ctx, purpose: str, endpoint: str):
    """Verify Your Email: choose the account email or another one, send the link, wait."""
    current = progress(ctx)
    change = request.args.get("change") == "1" or purpose == "modify"
    choice, email_form, continue_form = (VerifyEmailChoiceForm(prefix="c"),
                                         EmailForm(prefix="e"), ContinueForm(prefix="k"))
    resend_form = ResendForm(prefix="r")
    change = change or bool(request.method == "POST" and email_form.submit.data)
    error = None
    if request.method == "POST":
        if continue_form.submit.data and continue_form.validate():
            if policy.mfa_email(ctx.user) == current.link_sent_to and _link_used_since(ctx):
                if purpose == "modify":
                    current.update(modify_requested=False, link_sent_to=None)
                return continue_sign_in(ctx.pending)
            error = ("We haven't seen the link opened yet. Open the link in the email we sent, "
                     "then select Continue.")
        elif resend_form.resend.data and resend_form.validate() and current.link_sent_to:
            error = _send_link(ctx, current.link_sent_to, purpose)
            if error is None:
                flash("We sent a new link. Links sent earlier no longer matter.")
                return redirect(url_for(endpoint, pending_id=ctx.pending.id))
        elif choice.submit.data and choice.validate():
            if choice.choice.data == "no":
                return redirect(url_for(endpoint, pending_id=ctx.pending.id, change=1))
            error = _send_link(ctx, ctx.user.email, purpose)
            if error is None:
                return redirect(url_for(endpoint, pending_id=ctx.pending.id))
        elif email_form.submit.data and email_form.validate():
            error = _send_link(ctx, email_form.email.data.strip(), purpose)
            if error is None:
                return redirect(url_for(endpoint, pending_id=ctx.pending.id))
    waiting = current.link_sent_to and not request.args.get("change")
    return page("mfa/verify_email.html", ctx, choice=choice, email_form=email_form,
                 continue_form=continue_form, resend_form=resend_form, error=error,
                 waiting_for=mask_email(current.link_sent_to) if waiting else None,
                 change=change, purpose=purpose, account_email=ctx.user.email)


def _link_used_since(ctx) -> bool:
    return db.session.scalar(
        db.select(EmailVerification.id).filter_by(user_id=ctx.user.id, pending_id=ctx.pending.id)
        .where(EmailVerification.used_at.is_not(None))
    ) is not None


@bp.route("/verify-email/<pending_id>", methods=["GET", "POST"])
def verify_email(pending_id: str):
    # Served only while enrolling: an enrolled account's MFA email changes only through
    # Modify MFA Options.
    ctx = load_interaction(pending_id, serves=VerifyEmailStep.name)
    return email_page(ctx, "enroll", "mfa.verify_email")


def _link_expired_page(row: EmailVerification | None):
    """An MFA page like the others: the app's name and help, when the link is known."""
    pending = db.session.get(PendingAuthorization, row.pending_id) if (
        row is not None and row.pending_id) else None
    client = db.session.scalar(db.select(Client).filter_by(
        client_id=pending.client_id)) if pending else None
    response = current_app.make_response(
        (render_template("mfa/link_expired.html", client=client), 400))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/email-link")
def email_link():
    """The emailed link: verifies that exact address. It does not sign anyone in."""
    token = request.args.get("token", "")
    row = db.session.scalar(
        db.select(EmailVerification).filter_by(token_digest=digest(token))
    ) if len(token) < 100 else None
    live = row is not None and row.used_at is None and row.expires_at > utcnow()
    found = links.live_sign_in(row) if live else None
    pending, sso_session = found if found is not None else (None, None)
    email_factor = factor_row(row.user_id, "email") if pending is not None else None
    modify = pending is not None and links.sent_for_modify(pending, sso_session, row)
    if pending is None or (email_factor is not None and not modify
                           and email_factor.destination != row.address):
        # Used, expired, revoked by a newer link, or its sign-in is finished, abandoned or
        # expired: it verifies nothing. An enrolled email factor moves only by Modify MFA
        # Options, after its user passed the challenge on that sign-in.
        if row is not None and live:
            audit.record("mfa_email_link_refused", user_id=row.user_id,
                         reason="sign_in_not_live" if pending is None else "factor_enrolled")
            db.session.commit()
        return _link_expired_page(row)
    row.used_at = utcnow()
    account = lockout.account_for(row.user_id)
    previous = account.mfa_email if account.mfa_email_verified_at else None
    account.mfa_email, account.mfa_email_verified_at = row.address, utcnow()
    if email_factor is not None and email_factor.destination != row.address:
        email_factor.destination = row.address
        devices.forget(row.user_id, None, reason="factor_changed")
        audit.record("mfa_factor_changed", user_id=row.user_id, client_id=pending.client_id,
                     factor="email")
    elif email_factor is None and modify:
        # Modify MFA Options → Email adds the email factor when there was none.
        db.session.add(MfaFactor(user_id=row.user_id, kind="email", destination=row.address))
        audit.record("mfa_factor_added", user_id=row.user_id, factor="email")
    audit.record("mfa_email_verified", user_id=row.user_id, to=mask_email(row.address))
    db.session.commit()
    client = db.session.scalar(db.select(Client).filter_by(client_id=pending.client_id))
    same_browser = pending.browser_digest == digest(browser_id())
    context = {"address": row.address}
    try:
        send_email(row.address, "email_verified", context, kind="notice", user_id=row.user_id,
                   client=client)
        if previous and previous != row.address:
            send_email(previous, "mfa_contact_changed",
                       {"what": "email address", "new_value": mask_email(row.address)},
                       kind="notice", user_id=row.user_id, client=client)
    except DeliveryError as exc:
        log.warning("confirmation email not sent: %s", exc.reason)
    continue_url = None
    if same_browser:
        # Continue goes on from the page that sent the link, as its own Continue does.
        continue_url = url_for("mfa.modify_email" if modify else "mfa.verify_email",
                               pending_id=pending.id)
    return render_template("mfa/email_verified.html", client=client, continue_url=continue_url,
                           continue_form=ContinueForm(prefix="k"))


