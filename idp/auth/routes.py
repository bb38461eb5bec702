"""The core's hosted pages: sign-in (password), consent and terms."""

from __future__ import annotations

import math
import time

from authlib.oauth2.rfc6749 import list_to_scope, scope_to_list
from flask import Blueprint, current_app, render_template, request

from idp import audit, metrics, ratelimit
from idp.accounts import other_password_parameters
from idp.auth.forms import ConsentForm, LoginForm, TermsForm
from idp.auth.sessions import record_authentication
from idp.auth.steps import CONSENT_SCOPES, ConsentStep, TermsStep
from idp.crypto import keyed_digest
from idp.extensions import db, insert_unless_present, upsert
from idp.models import Client, Consent, TermsAcceptance, User, find_client
from idp.passwords import hash_password, needs_rehash, verify_password
from idp.security import digest
from idp.signin.context import bind_progress
from idp.signin.interaction import continue_sign_in, deny, load_interaction, load_pending
from idp.timeutil import utcnow

bp = Blueprint("auth", __name__)


def login_limits(username: str) -> list[ratelimit.Limit]:
    """Password attempts per user name (whether it exists or not) and per address."""
    config = current_app.config
    window = config["IDP_LOGIN_LIMIT_WINDOW"]
    return [
        ratelimit.Limit("user", "login:user:" + keyed_digest(username, "login"),
                        config["IDP_LOGIN_LIMIT_PER_USER"], window),
        ratelimit.Limit("address", "login:ip:" + keyed_digest(request.remote_addr or "", "login"),
                        config["IDP_LOGIN_LIMIT_PER_ADDRESS"], window),
    ]

# A page with a password form is never kept by a browser or proxy.
NO_STORE = {"Cache-Control": "no-store"}
PASSWORD_EVENT = {"method": "pwd", "amr": ["pwd"], "factor": "password"}
LOGIN_FAILED = "The user name or password you entered is incorrect."
SIGN_IN_UNAVAILABLE = ("Sign-in is temporarily unavailable. Your password was not "
                       "checked. Try again in a minute.")


def _client(pending) -> Client:
    return find_client(pending.client_id)


def password_proven(pending, user: User, event: str) -> None:
    """``user`` proved their password in this sign-in (at the sign-in page, or by choosing it
    at Create New Account): a new authentication event of this browser's session, to which
    the sign-in's progress is bound. Audited as ``event``; committed."""
    session = record_authentication(user, PASSWORD_EVENT)
    # A new authentication event: whatever this sign-in had proven before (for another
    # user, or for an earlier event) is discarded.
    bind_progress(pending, session)
    pending.user_id, pending.login_at = user.id, utcnow()
    audit.record(event, user_id=user.id, client_id=pending.client_id)
    db.session.commit()


@bp.route("/signin/<pending_id>", methods=["GET", "POST"])
def login(pending_id: str):
    pending = load_pending(pending_id)
    client = _client(pending)
    form = LoginForm()
    if not form.is_submitted() and pending.params.get("login_hint"):
        form.username.data = pending.params["login_hint"][:150]
    error = None
    if form.validate_on_submit():
        username = form.username.data
        limits = login_limits(username)
        attempt_at = time.time()
        try:
            refused = ratelimit.hit(limits, now=attempt_at)
        except ratelimit.RateLimitUnavailable as exc:
            # Password guesses are never let through unthrottled: ask to come back shortly.
            db.session.rollback()
            metrics.sign_in("unavailable")
            return (render_template("idp/login.html", form=form, client=client,
                                    pending_id=pending_id,
                                    error=SIGN_IN_UNAVAILABLE),
                    503, {"Retry-After": str(exc.retry_after), **NO_STORE})
        if refused is not None:
            db.session.rollback()
            limit, retry_after = refused
            audit.record("login_throttled", client_id=client.client_id, limit=limit.name,
                         retry_after=retry_after)
            db.session.commit()
            metrics.sign_in("throttled")
            minutes = max(1, math.ceil(retry_after / 60))
            error = (f"Too many sign-in attempts. For your security, wait {minutes} "
                     f"minute{'s' if minutes != 1 else ''} and try again.")
            return render_template("idp/login.html", form=form, client=client,
                                    pending_id=pending_id,
                                   error=error), 429, NO_STORE
        db.session.commit()
        user = None if "\x00" in username else db.session.scalar(
            db.select(User).filter_by(username=username)
        )
        # verify_password spends the same time for an unknown user as for a wrong password,
        # also while some stored hashes were made with other parameters.
        ok = verify_password(user.password_hash if user else None, form.password.data,
                             other_password_parameters())
        if ok and user is not None and not user.disabled:
            if needs_rehash(user.password_hash):
                user.password_hash = hash_password(form.password.data)
            ratelimit.forget(limits, attempt_at)  # only failures count
            password_proven(pending, user, "login_succeeded")
            metrics.sign_in("accepted")
            return continue_sign_in(pending)
        audit.record("login_failed", user_id=user.id if user else None,
                     client_id=client.client_id)
        db.session.commit()
        metrics.sign_in("unknown_user" if user is None else "disabled" if ok else "rejected")
        error = LOGIN_FAILED
    status = 200 if error is None and not form.errors else 400
    return (render_template("idp/login.html", form=form, client=client,
                                    pending_id=pending_id, error=error), status,
            NO_STORE)


@bp.route("/consent/<pending_id>", methods=["GET", "POST"])
def consent(pending_id: str):
    ctx = load_interaction(pending_id, serves=ConsentStep.name)
    pending, client, user_id = ctx.pending, ctx.client, ctx.session.user_id
    form = ConsentForm()
    if form.validate_on_submit():
        if form.deny.data:
            return deny(pending, "consent_denied")
        wanted = set(scope_to_list(pending.params.get("scope") or "")) & CONSENT_SCOPES
        row = _own_row(Consent, user_id, client.client_id, scope="", granted_at=utcnow())
        row.scope = list_to_scope(sorted(set(scope_to_list(row.scope or "")) | wanted))
        row.granted_at = utcnow()
        ctx.save_state(ConsentStep.name, {"given": True})
        audit.record("consent_granted", user_id=row.user_id, client_id=client.client_id,
                     scope=row.scope)
        db.session.commit()
        return continue_sign_in(pending)
    scopes = scope_to_list(pending.params.get("scope") or "") or []
    return render_template("idp/consent.html", form=form, client=client, scopes=scopes)


def _own_row(model, user_id: int, client_id: str, **defaults):
    """The user's row for the client (consent, terms), created if missing; a second press of
    the same button at the same moment finds it instead of failing."""
    insert_unless_present(model, {"user_id": user_id, "client_id": client_id, **defaults},
                          ["user_id", "client_id"])
    return db.session.scalar(db.select(model).filter_by(user_id=user_id, client_id=client_id)
                             .execution_options(populate_existing=True))


@bp.route("/terms/<pending_id>", methods=["GET", "POST"])
def terms(pending_id: str):
    ctx = load_interaction(pending_id, serves=TermsStep.name)
    pending, client, user_id = ctx.pending, ctx.client, ctx.session.user_id
    form = TermsForm()
    if form.validate_on_submit():
        if form.decline.data:
            return deny(pending, "terms_declined")
        upsert(TermsAcceptance, {"user_id": user_id, "client_id": client.client_id,
                                 "terms_digest": digest(client.terms_text or ""),
                                 "accepted_at": utcnow()}, ["user_id", "client_id"])
        audit.record("terms_accepted", user_id=user_id, client_id=client.client_id)
        db.session.commit()
        return continue_sign_in(pending)
    return render_template("idp/terms.html", form=form, client=client)
