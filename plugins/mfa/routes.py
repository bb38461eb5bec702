"""The MFA pages: enrollment offer, email verification, method choice and set-up, the
challenge, Modify MFA Options, remembered devices and the FAQ."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import validate_csrf
from wtforms import ValidationError

from idp.plugin_api import (
    Client,
    DeliveryError,
    InteractionError,
    PendingAuthorization,
    PhoneNumberError,
    ThrottledError,
    audit,
    browser_id,
    continue_sign_in,
    current_session,
    db,
    decrypt,
    digest,
    encrypt,
    issuer,
    load_context,
    load_pending,
    mask_email,
    normalize_us_phone,
    random_token,
    record_authentication,
    resume_url,
    send_email,
    send_sms,
    utcnow,
)
from plugins.mfa import devices, links, lockout, passcodes, policy
from plugins.mfa import metrics as mfa_metrics
from plugins.mfa.factors import ENROLLABLE, FACTORS, RecoveryFactor, TotpFactor
from plugins.mfa.forms import (
    ContinueForm,
    EmailForm,
    ForgetDevicesForm,
    MethodForm,
    ModifyForm,
    OfferForm,
    PasscodeForm,
    PhoneForm,
    ResendForm,
    VerifyEmailChoiceForm,
)
from plugins.mfa.models import EmailVerification, MfaFactor
from plugins.mfa.steps import enrolling, modify_allowed, state, update_state

log = logging.getLogger(__name__)

# The plugin's pages and emails are its own (templates/mfa/, templates/email/ here).
bp = Blueprint("mfa", __name__, url_prefix="/mfa", template_folder="templates")


@bp.after_request
def _never_cached(response):
    """Every MFA page shows a passcode form, a secret (app set-up key, recovery codes) or a
    link's outcome: no browser or proxy may keep a copy."""
    response.headers["Cache-Control"] = "no-store"
    return response


# --- helpers ------------------------------------------------------------------------------


def _interaction(pending_id: str):
    """The sign-in context of a pending request of this browser, its progress bound to the
    user signed in now. A form posted after another user (session, event) took the sign-in
    over was filled in for someone else: it does nothing, and the pipeline decides."""
    ctx = load_context(load_pending(pending_id), current_session())
    if ctx.progress_discarded and request.method == "POST":
        db.session.commit()
        abort(redirect(resume_url(ctx.pending)))
    return ctx


def _resume(ctx):
    db.session.commit()
    return continue_sign_in(ctx.pending)


def _page(template: str, ctx, **values):
    return render_template(template, client=ctx.client, pending=ctx.pending, **values)


def _passed(ctx, kind: str, remember: bool, **extra_state) -> None:
    """A factor was checked: record it in the SSO session (the session id rotates)."""
    record_authentication(ctx.user, FACTORS[kind].event())
    lockout.record_success(ctx.user.id)
    if remember:
        devices.remember(ctx.user.id)
    update_state(ctx, challenge_passed=True, **extra_state)


def _failure_message(ctx, outcome: passcodes.Outcome | None,
                     attempt: lockout.Attempt | None = None) -> str:
    """Record a failed check, the ``attempt`` admitted for it (by default the one
    :func:`_locked_error` admitted); the message says what to do next. A cool-down or a
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
        return _locked_message(ctx)
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
        _notify(ctx, template, context, emails=[policy.mfa_email(ctx.user) or ctx.user.email])
        return _locked_message(ctx, attempt.kind)
    if outcome is passcodes.Outcome.EXHAUSTED:
        return "Too many wrong tries for this passcode. Select Resend to get a new one."
    return "The passcode you entered is not correct. Check it and try again."


def _locked_message(ctx, kind: str | None = None) -> str:
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


def _send_code(ctx, kind: str, destination: str, purpose: str) -> str | None:
    """Issue a passcode and send it; returns an error message for the page, or None.

    The new code is committed together with the send throttle's count; when a throttle
    refuses, both are rolled back and the code sent earlier stays valid."""
    code = passcodes.issue(ctx.user.id, ctx.pending.id, kind, purpose, destination)
    update_state(ctx, code_factor=kind, code_destination=destination, code_purpose=purpose)
    try:
        FACTORS[kind].send(destination, code, ctx.user.id, ctx.client)
    except ThrottledError as exc:
        if exc.reason == "throttled:destination":
            if passcodes.live_code(ctx.user.id, ctx.pending.id, kind, purpose, destination):
                return exc.user_message  # a Resend too soon: the code sent is still valid
            # The code sent moments ago belongs to another sign-in: it cannot be used here.
            return (f"A passcode was sent to {FACTORS[kind].describe(destination)} moments "
                    f"ago. Wait {exc.retry_after} seconds, then select Resend.")
        return exc.user_message
    except DeliveryError as exc:
        # Never delivered: it must not pass for "the passcode already sent".
        passcodes.revoke(ctx.user.id, ctx.pending.id, kind, purpose)
        db.session.commit()
        return exc.user_message
    audit.record("mfa_passcode_sent", user_id=ctx.user.id, client_id=ctx.client.client_id,
                 factor=kind, purpose=purpose)
    db.session.commit()
    return None


def _notify(ctx, template: str, context: dict, emails: list[str | None] = (),
            phones: list[str | None] = (), sms_text: str | None = None) -> None:
    """Security notices; a failed notice is logged, never an obstacle."""
    for address in dict.fromkeys(a for a in emails if a):
        try:
            send_email(address, template, context, kind="notice", user_id=ctx.user.id,
                       client=ctx.client)
        except DeliveryError as exc:
            log.warning("notice %s not sent: %s", template, exc.reason)
    for phone in dict.fromkeys(p for p in phones if p):
        try:
            send_sms(phone, "notice", {"text": sms_text}, kind="notice", user_id=ctx.user.id,
                     client=ctx.client)
        except (DeliveryError, PhoneNumberError) as exc:
            log.warning("SMS notice not sent: %s", exc)


def _factor(user_id: int, kind: str) -> MfaFactor | None:
    return db.session.scalar(db.select(MfaFactor).filter_by(user_id=user_id, kind=kind))


def _save_factor(ctx, kind: str, destination: str | None = None,
                 secret_encrypted: str | None = None, last_step: int = 0) -> MfaFactor:
    """Enroll or replace a factor; replacing one forgets every remembered device."""
    row = _factor(ctx.user.id, kind)
    changed = row is not None
    if row is None:
        row = MfaFactor(user_id=ctx.user.id, kind=kind)
        db.session.add(row)
    row.destination, row.secret_encrypted, row.last_step = destination, secret_encrypted, last_step
    row.last_used_at = utcnow()
    account = lockout.account_for(ctx.user.id)
    account.enrolled_at = account.enrolled_at or utcnow()
    if changed:
        devices.forget(ctx.user.id, None, reason="factor_changed")
    audit.record("mfa_factor_changed" if changed else "mfa_factor_added", user_id=ctx.user.id,
                 client_id=ctx.client.client_id, factor=kind)
    return row


def _recovery_codes_page(ctx, codes: list[str]):
    """Show new recovery codes once; they are not stored anywhere in the clear."""
    response = current_app.make_response(
        _page("mfa/recovery_codes.html", ctx, codes=codes, continue_url=resume_url(ctx.pending))
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _after_setup(ctx):
    """After a factor is set up: the first time, ten recovery codes; then on with sign-in."""
    if RecoveryFactor.remaining(ctx.user.id) == 0:
        codes = RecoveryFactor.generate(ctx.user.id)
        db.session.commit()
        return _recovery_codes_page(ctx, codes)
    return _resume(ctx)


def _login_first(ctx):
    return redirect(resume_url(ctx.pending))


def _setup_interaction(pending_id: str):
    """A factor set-up page's sign-in: ``(ctx, purpose, None)``, or ``(ctx, None, response)``
    when the person belongs elsewhere (the password first, or on with the sign-in)."""
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return ctx, None, _login_first(ctx)
    purpose = _setup_purpose(ctx)
    if purpose is None:
        return ctx, None, _resume(ctx)
    return ctx, purpose, None


def _locked_error(ctx, kind: str, purpose: str) -> str | None:
    """None when a code of ``kind`` may be checked now, else the message saying why not:
    the account's cool-down, or ``kind`` blocked after too many failures in a row.

    On a POST this admits the check that follows (:func:`lockout.admit_attempt`, counted in
    this request's transaction, which holds the account's lock until it commits): the
    answer is checked only when this returns None, and :func:`_failure_message` records a
    failure (a POST that checks nothing, its form invalid, ends without a commit and counts
    for nothing). A refused try is counted as ``locked`` and never checked."""
    if request.method != "POST":
        if lockout.locked_until(ctx.user.id) or lockout.is_blocked(ctx.user.id, kind):
            return _locked_message(ctx, kind)
        return None
    attempt = lockout.admit_attempt(ctx.user.id, kind)
    if attempt.admitted:
        ctx.extras["mfa_attempt"] = attempt
        return None
    db.session.commit()  # nothing was counted; a cool-down may have started
    mfa_metrics.checked(kind, purpose, "locked")
    return _locked_message(ctx, kind)


def _setup_purpose(ctx) -> str | None:
    """Why this sign-in may set up a factor now: ``enroll`` (enrolling, with the MFA email
    verified first) or ``modify`` (Modify MFA Options, after passing the challenge). None
    otherwise: a password alone never adds a factor, whatever URL is opened."""
    if modify_allowed(ctx):
        return "modify"
    if enrolling(ctx) and policy.mfa_email(ctx.user) is not None:
        return "enroll"
    return None


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
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return _login_first(ctx)
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
        return _resume(ctx)
    cutoff = policy.required_from().strftime("%B %-d, %Y")
    message = REASONS[reason].format(cutoff=cutoff, app=ctx.client.label)
    return _page("mfa/offer.html", ctx, form=form, optional=optional, message=message)


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
    before = {k: state(ctx).get(k) for k in ("link_sent_to", "link_purpose")}
    update_state(ctx, link_sent_to=address, link_purpose=purpose)
    try:
        send_email(address, "verify_email", {"link": _link_url(token), "link_minutes": minutes},
                   kind="link", user_id=ctx.user.id, client=ctx.client)
    except DeliveryError as exc:
        # Nothing was sent: the page must not say it waits for this link.
        update_state(ctx, **before)
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


def _email_page(ctx, purpose: str, endpoint: str):
    """Verify Your Email: choose the account email or another one, send the link, wait."""
    current = state(ctx)
    change = request.args.get("change") == "1" or purpose == "modify"
    choice, email_form, continue_form = (VerifyEmailChoiceForm(prefix="c"),
                                         EmailForm(prefix="e"), ContinueForm(prefix="k"))
    resend_form = ResendForm(prefix="r")
    change = change or bool(request.method == "POST" and email_form.submit.data)
    error = None
    if request.method == "POST":
        if continue_form.submit.data and continue_form.validate():
            if policy.mfa_email(ctx.user) == current.get("link_sent_to") and (
                    _link_used_since(ctx)):
                if purpose == "modify":
                    update_state(ctx, modify_requested=False, link_sent_to=None)
                return _resume(ctx)
            error = ("We haven't seen the link opened yet. Open the link in the email we sent, "
                     "then select Continue.")
        elif resend_form.resend.data and resend_form.validate() and current.get("link_sent_to"):
            error = _send_link(ctx, current["link_sent_to"], purpose)
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
    current = state(ctx)
    waiting = current.get("link_sent_to") and not request.args.get("change")
    return _page("mfa/verify_email.html", ctx, choice=choice, email_form=email_form,
                 continue_form=continue_form, resend_form=resend_form, error=error,
                 waiting_for=mask_email(current["link_sent_to"]) if waiting else None,
                 change=change, purpose=purpose, account_email=ctx.user.email)


def _link_used_since(ctx) -> bool:
    return db.session.scalar(
        db.select(EmailVerification.id).filter_by(user_id=ctx.user.id, pending_id=ctx.pending.id)
        .where(EmailVerification.used_at.is_not(None))
    ) is not None


@bp.route("/verify-email/<pending_id>", methods=["GET", "POST"])
def verify_email(pending_id: str):
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return _login_first(ctx)
    if not enrolling(ctx):
        # An enrolled account's MFA email changes only through Modify MFA Options.
        return _resume(ctx)
    return _email_page(ctx, "enroll", "mfa.verify_email")


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
    pending = links.live_sign_in(row) if live else None
    email_factor = _factor(row.user_id, "email") if pending is not None else None
    modify = pending is not None and links.sent_for_modify(pending, row)
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


@bp.route("/enroll/<pending_id>", methods=["GET", "POST"])
def enroll(pending_id: str):
    ctx, purpose, elsewhere = _setup_interaction(pending_id)
    if elsewhere is not None or purpose != "enroll":
        return elsewhere or _resume(ctx)
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
        error = _send_code(ctx, "email", policy.mfa_email(ctx.user), "enroll")
        if error is None:
            return redirect(url_for("mfa.passcode", pending_id=pending_id))
    return _page("mfa/choose_method.html", ctx, form=form, error=error)


@bp.route("/phone/<pending_id>", methods=["GET", "POST"])
def phone(pending_id: str):
    """Verify Your Phone Number (enrollment, or a new number from Modify MFA Options)."""
    ctx, purpose, elsewhere = _setup_interaction(pending_id)
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
            error = _send_code(ctx, "sms", number, purpose)
            if error is None:
                return redirect(url_for("mfa.passcode", pending_id=pending_id))
    return _page("mfa/phone.html", ctx, form=form, error=error, purpose=purpose)


@bp.route("/passcode/<pending_id>", methods=["GET", "POST"])
def passcode(pending_id: str):
    """The passcode sent while enrolling or changing a factor."""
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return _login_first(ctx)
    current = state(ctx)
    kind, destination = current.get("code_factor"), current.get("code_destination")
    purpose = current.get("code_purpose")
    if (purpose not in ("enroll", "modify") or kind not in ("sms", "email")
            or purpose != _setup_purpose(ctx)):
        return _resume(ctx)
    form = PasscodeForm()
    error = _locked_error(ctx, kind, purpose)
    if error is None and form.validate_on_submit():
        outcome = passcodes.verify(ctx.user.id, ctx.pending.id, kind, purpose, destination,
                                   form.passcode.data)
        mfa_metrics.checked(kind, purpose, outcome)
        if outcome is passcodes.Outcome.OK:
            return _factor_confirmed(ctx, kind, destination, purpose, form.remember.data)
        error = _failure_message(ctx, outcome)
    return _page("mfa/passcode.html", ctx, form=form, resend_form=ResendForm(prefix="r"),
                 error=error, where=FACTORS[kind].describe(destination), kind=kind,
                 resend_url=url_for("mfa.resend", pending_id=pending_id),
                 other_number_url=url_for("mfa.phone", pending_id=pending_id)
                 if kind == "sms" else None, show_modify=False,
                 modify_cancel=purpose == "modify")


def _factor_confirmed(ctx, kind: str, destination: str, purpose: str, remember: bool):
    old = _factor(ctx.user.id, kind)
    old_destination = old.destination if old is not None else None
    _save_factor(ctx, kind, destination=destination)
    _passed(ctx, kind, remember, enrolling=False, code_purpose=None,
            **({"modify_requested": False} if purpose == "modify" else {}))
    db.session.commit()
    mfa_email = policy.mfa_email(ctx.user)
    if purpose == "modify" and kind == "sms" and old_destination != destination:
        _notify(ctx, "mfa_contact_changed", {"what": "phone number",
                                             "new_value": FACTORS["sms"].describe(destination)},
                emails=[mfa_email or ctx.user.email], phones=[old_destination],
                sms_text="The phone number for your multifactor authentication was changed.")
    else:
        _notify(ctx, "mfa_method_added", {"method": FACTORS[kind].label},
                emails=[mfa_email or ctx.user.email])
    return _after_setup(ctx)


@bp.post("/resend/<pending_id>")
def resend(pending_id: str):
    """Resend: a new code to the same destination; the old code dies."""
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return _login_first(ctx)
    form = ResendForm(prefix="r")
    current = state(ctx)
    kind, destination = current.get("code_factor"), current.get("code_destination")
    purpose = current.get("code_purpose") or "challenge"
    target = "mfa.challenge" if purpose == "challenge" else "mfa.passcode"
    if lockout.locked_until(ctx.user.id) or lockout.is_blocked(ctx.user.id, kind):
        pass  # no code during a cool-down or for a blocked factor: the page says why
    elif form.validate_on_submit() and kind in ("sms", "email") and destination:
        error = _send_code(ctx, kind, destination, purpose)
        flash(error or f"We sent a new passcode to {FACTORS[kind].describe(destination)}.",
              "error" if error else "info")
    return redirect(url_for(target, pending_id=pending_id))


@bp.route("/app/<pending_id>", methods=["GET", "POST"])
def app(pending_id: str):
    """Set up an authentication app: QR code and secret, then a code to confirm."""
    ctx, purpose, elsewhere = _setup_interaction(pending_id)
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
    error = _locked_error(ctx, "totp", purpose)
    if error is None and form.validate_on_submit():
        step = factor.matching_step(secret, form.passcode.data)
        mfa_metrics.checked("totp", purpose, "wrong_code" if step is None else "success")
        if step is not None:
            _save_factor(ctx, "totp", secret_encrypted=factor.encrypt_secret(secret),
                         last_step=step)
            _passed(ctx, "totp", form.remember.data, enrolling=False, totp_secret=None,
                    **({"modify_requested": False} if purpose == "modify" else {}))
            db.session.commit()
            _notify(ctx, "mfa_method_added", {"method": factor.label},
                    emails=[policy.mfa_email(ctx.user) or ctx.user.email])
            return _after_setup(ctx)
        error = _failure_message(ctx, None).replace("passcode", "code")
    uri = factor.provisioning_uri(secret, ctx.user.username)
    return _page("mfa/app.html", ctx, form=form, error=error, secret=secret,
                 qr=factor.qr_svg(uri), modify_cancel=purpose == "modify")


# --- the challenge ------------------------------------------------------------------------


def _available(user_id: int) -> tuple[list[str], dict[str, MfaFactor]]:
    """The factors a challenge may offer, in order, and the user's factor rows by kind.

    A kind blocked after too many failures in a row is not offered. On a POST it stays in
    the list, last, so that an answer typed on a page shown before the block is refused as
    such (see :func:`_locked_error`) rather than checked as a code of another factor. When
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
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return _login_first(ctx)
    available, rows = _available(ctx.user.id)
    if policy.aal2_step_up(ctx):
        # Only a factor that meets AAL2 ends this challenge: offer no other.
        available = [k for k in available if FACTORS[k].aal2]
    if not available:
        return _resume(ctx)  # no factor left (an MFA reset meanwhile): the pipeline decides
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
    error = _locked_error(ctx, kind, "challenge")
    if error is None and request.method == "POST":
        if form.validate_on_submit():
            ok, outcome = _check_challenge(ctx, kind, row, destination, form.passcode.data)
            mfa_metrics.checked(kind, "challenge",
                                "success" if ok else outcome or "wrong_code")
            if ok:
                return _challenge_passed(ctx, kind, row, form.remember.data)
            error = _failure_message(ctx, outcome)
    elif error is None and factor.sends_code:
        live = passcodes.live_code(ctx.user.id, ctx.pending.id, kind, "challenge", destination)
        if live is not None and state(ctx).get("code_purpose") == "challenge":
            info = "The passcode already sent is still valid."
        else:
            error = _send_code(ctx, kind, destination, "challenge")
    return _page("mfa/passcode.html", ctx, form=form, resend_form=ResendForm(prefix="r"),
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
    _passed(ctx, kind, remember, challenge_factor=kind, code_purpose=None)
    audit.record("mfa_challenge_passed", user_id=ctx.user.id, client_id=ctx.client.client_id,
                 factor=kind)
    db.session.commit()
    notice_to = [policy.mfa_email(ctx.user) or ctx.user.email]
    if kind == "recovery":
        remaining = RecoveryFactor.remaining(ctx.user.id)
        _notify(ctx, "recovery_code_used", {"remaining": remaining}, emails=notice_to)
    else:
        _notify(ctx, "new_device_sign_in",
                {"when": utcnow().strftime("%B %-d, %Y at %H:%M UTC")}, emails=notice_to)
    return _resume(ctx)


# --- Modify MFA Options -------------------------------------------------------------------


@bp.route("/modify/<pending_id>", methods=["GET", "POST"])
def modify(pending_id: str):
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return _login_first(ctx)
    if not modify_allowed(ctx):
        return _resume(ctx)
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
        return _resume(ctx)
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
        return _recovery_codes_page(ctx, codes)
    return _page("mfa/modify.html", ctx, form=form)


@bp.route("/modify-email/<pending_id>", methods=["GET", "POST"])
def modify_email(pending_id: str):
    ctx = _interaction(pending_id)
    if ctx.user is None:
        return _login_first(ctx)
    if _setup_purpose(ctx) != "modify":
        return _resume(ctx)
    return _email_page(ctx, "modify", "mfa.modify_email")


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
