"""The account page (``/account``): Profile, Password, the plugins' sections (the MFA
plugin's MFA Methods and Remembered Devices), Where You're Signed In, Connected
Applications and Recent Security Events.

The page is the IdP's own application: a browser without a session good enough for it (a
password, and the second factor where the account has MFA or must have it) is sent through
the sign-in pipeline as a sign-in to the first-party client ``idp-account``, whose answer
comes back to ``/account/callback``; no token is ever issued to it (its code is voided on
arrival, and its PKCE verifier was never kept).

A change of a security setting needs a fresh check: the password or a factor checked within
``IDP_ACCOUNT_FRESH_SECONDS``. Without one, the browser is sent to sign in again
(``prompt=login``) and comes back to the section it was in. Changing the password asks for
the current one instead.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import timedelta

from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import (
    abort,
    current_app,
    flash,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from idp import audit, password_policy, ratelimit
from idp.accounts import change_password, notice_addresses_of, revoke_tokens_and_codes
from idp.auth.routes import login_limits
from idp.auth.sessions import COOKIE_SSO, browser_id, current_session, end_session
from idp.delivery import DeliveryError, mask_email, send_email
from idp.errors import InteractionError
from idp.extensions import db, insert_unless_present
from idp.models import (
    AuditEvent,
    AuthorizationCode,
    Client,
    Consent,
    PendingAuthorization,
    SessionClient,
    SsoSession,
    Token,
    User,
    find_client,
)
from idp.models.client import ACCOUNT_CLIENT_ID
from idp.oauth.issuer import issuer
from idp.passwords import verify_password
from idp.plugins import get_registry
from idp.security import digest, random_token
from idp.selfservice import links
from idp.selfservice.forms import (
    AccountEmailForm,
    ChangePasswordForm,
    ConfirmEmailChangeForm,
    EndSessionsForm,
    ProfileForm,
    RevokeApplicationForm,
)
from idp.selfservice.pages import NO_STORE, UNAVAILABLE, bp, throttled, valid_email
from idp.signin.interaction import run
from idp.timeutil import epoch, utcnow

log = logging.getLogger(__name__)

EVENTS_DAYS = 90
EVENTS_SHOWN = 50
#: Email changes an account may ask for per hour (each sends a link and a notice).
EMAIL_CHANGES_PER_HOUR = 5
_STATE = "account_sign_in"  # the sign-in's state digest and where to return, in the cookie

#: Recent Security Events: the core's events in plain words (plugins add theirs).
EVENT_PHRASES = {
    "login_succeeded": "Signed in with your password",
    "signed_in_at_account_creation": "Account created and signed in",
    "login_failed": "Wrong password entered",
    "login_throttled": "Sign-in paused after too many tries",
    "self_service_throttled": "Paused after too many tries",
    "password_changed": "Password changed",
    "password_reset": "Password reset by an emailed link",
    "password_reset_asked": "Password reset link asked for",
    "account_email_verified": "Account email verified",
    "account_email_changed": "Account email changed",
    "account_email_change_asked": "Account email change asked for",
    "profile_changed": "Name changed",
    "sessions_and_tokens_revoked": "Signed out everywhere",
    "session_signed_out": "Signed out of a browser",
    "application_access_revoked": "Access of an application removed",
    "consent_granted": "Access given to an application",
    "user_disabled": "Account disabled",
    "user_enabled": "Account enabled",
}
SECTION_ANCHORS = {"profile", "password", "sessions", "applications", "events"}


# --- the first-party client -----------------------------------------------------------------


def callback_url() -> str:
    return issuer() + url_for("selfservice.account_callback")


FIRST_PARTY = "first_party"  # the mark in the settings of the client the page made


def account_client():
    """The account page's client row, made (or its return address set to this issuer's)
    on first use; several instances doing it at once keep one row. A client registered
    with that id by other means is never changed: the page is unavailable then."""
    wanted = [callback_url()]
    client = find_client(ACCOUNT_CLIENT_ID)
    if client is not None and not (client.settings or {}).get(FIRST_PARTY):
        log.error("The client id %r is registered for another application: the account page "
                  "cannot sign anyone in until it is deleted.", ACCOUNT_CLIENT_ID)
        raise InteractionError("The account page is unavailable. Contact "
                               f"{current_app.config['IDP_SUPPORT_CONTACT']}.",
                               title="Account page unavailable", status=503)
    if client is not None and list(client.redirect_uris or []) == wanted:
        return client
    if client is None:
        insert_unless_present(Client, {
            "client_id": ACCOUNT_CLIENT_ID, "name": "Your account",
            "display_name": f"Your {current_app.config['IDP_BRAND_NAME']} account",
            "auth_method": "none", "redirect_uris": wanted, "post_logout_redirect_uris": [],
            "grant_types": ["authorization_code"], "scope": "openid", "require_pkce": True,
            "settings": {FIRST_PARTY: True}, "created_at": utcnow()}, ["client_id"])
    else:
        db.session.execute(update(Client).where(Client.client_id == ACCOUNT_CLIENT_ID)
                           .values(redirect_uris=wanted))
    db.session.commit()
    g.setdefault("idp_clients", {}).pop(ACCOUNT_CLIENT_ID, None)
    return find_client(ACCOUNT_CLIENT_ID)


def signed_in_enough(row: SsoSession | None) -> bool:
    """Whether this session may see the account page: a verified account, signed in as
    every guard (the MFA plugin's) wants."""
    if row is None or row.user.must_verify_email:
        return False
    client = account_client()
    return all(guard(row, client) for guard in get_registry(current_app).account_guards)


def account_is_fresh(row: SsoSession) -> bool:
    """The password or a factor was checked within ``IDP_ACCOUNT_FRESH_SECONDS``, and every
    plugin's check agrees (the MFA plugin: a second factor within that time, where the
    account has one; a remembered device is no check of the person)."""
    since = epoch(utcnow()) - current_app.config["IDP_ACCOUNT_FRESH_SECONDS"]
    if not any(event.get("at", 0) >= since and event.get("factor") is not None
               for event in row.events or []):
        return False
    return all(check(row, since) for check in get_registry(current_app).account_fresh_checks)


def _sign_in(intent: str | None = None, fresh: bool = False, then: str | None = None):
    """Start the account page's own sign-in (see the module's text)."""
    client = account_client()
    state = random_token(24)
    # The client requires PKCE; the verifier is not kept: the code is never redeemed.
    params = {"response_type": "code", "client_id": client.client_id,
              "redirect_uri": callback_url(), "scope": "openid", "state": state,
              "code_challenge": create_s256_code_challenge(random_token(32)),
              "code_challenge_method": "S256"}
    if fresh:
        params["prompt"] = "login"
    session[_STATE] = {"state": digest(state), "then": then if then else None}
    now = utcnow()
    pending = PendingAuthorization(
        id=random_token(24), browser_digest=digest(browser_id()), client_id=client.client_id,
        params=params, state={"core": {"account_page": True,
                                       **({"intent": intent} if intent else {}),
                                       **({"fresh": True} if fresh else {})}},
        expires_at=now + timedelta(seconds=current_app.config["IDP_PENDING_LIFETIME"]))
    db.session.add(pending)
    return run(pending)


def account_session() -> SsoSession:
    """The session of a POST to the account page, or the page's own sign-in."""
    row = current_session()
    if not signed_in_enough(row):
        abort(_sign_in())
    return row


def _needs_fresh(row: SsoSession, anchor: str):
    """None when the session is fresh; else the redirect to sign in again."""
    if account_is_fresh(row):
        return None
    return account_sign_in(fresh=True, then=anchor)


def account_sign_in(intent: str | None = None, fresh: bool = False, then: str | None = None):
    """Sign in again for the account page: for a plugin's ``intent``, or (``fresh``) to
    make a change that needs a fresh check; the browser comes back to the section ``then``
    and makes the change again."""
    if fresh:
        flash("For your security, sign in again, then make your change.", "info")
    return _sign_in(intent=intent, fresh=fresh, then=then)


def account_return(anchor: str):
    """Back to a section of the account page."""
    return redirect(url_for("selfservice.account") + f"#{anchor}")


# --- the sign-in's return -------------------------------------------------------------------


@bp.route("/account/sign-in", methods=["GET", "POST"], endpoint="account_sign_in")
def sign_in_page():
    """Sign in for the account page; a form posted from the page (with its CSRF token, so
    that no other site can start one: it may send a passcode) may name a plugin's
    ``intent``."""
    intent = then = None
    if request.method == "POST":
        intent, then = request.form.get("intent"), request.form.get("then")
    if intent not in get_registry(current_app).account_intents:
        intent = None
    return _sign_in(intent=intent, then=then if then in _anchors() else None)


@bp.route("/account/callback")
def account_callback():
    expected = session.pop(_STATE, None)
    code, state = request.args.get("code", ""), request.args.get("state", "")
    if code and len(code) <= 200:
        # Never redeemed: the page needs the session, not a token.
        db.session.execute(update(AuthorizationCode).where(
            AuthorizationCode.code_digest == digest(code),
            AuthorizationCode.client_id == ACCOUNT_CLIENT_ID,
            AuthorizationCode.used_at.is_(None)).values(used_at=utcnow()))
        db.session.commit()
    matches = (isinstance(expected, dict) and state and len(state) <= 200
               and hmac.compare_digest(expected.get("state") or "", digest(state)))
    if request.args.get("error"):
        raise InteractionError("The sign-in to your account was not finished. Go to your "
                               "account page to try again.", title="Not signed in")
    then = expected.get("then") if matches else None
    return redirect(url_for("selfservice.account") + (f"#{then}" if then else ""))


# --- the page -------------------------------------------------------------------------------


def _anchors() -> set[str]:
    return SECTION_ANCHORS | {s.anchor for s in get_registry(current_app).account_sections}


def _live_sessions(user_id: int) -> list[dict]:
    now = utcnow()
    rows = db.session.scalars(select(SsoSession).where(
        SsoSession.user_id == user_id, SsoSession.ended_at.is_(None),
        SsoSession.expires_at > now).order_by(SsoSession.created_at.desc())).all()
    apps: dict[int, list[str]] = {}
    if rows:
        for session_id, display_name, name in db.session.execute(
                select(SessionClient.session_id, Client.display_name, Client.name)
                .join(Client, Client.client_id == SessionClient.client_id)
                .where(SessionClient.session_id.in_([r.id for r in rows]),
                       SessionClient.client_id != ACCOUNT_CLIENT_ID)):
            apps.setdefault(session_id, []).append(display_name or name)
    return [{"row": r, "apps": sorted(apps.get(r.id, []))} for r in rows]


def _client_labels(client_ids: set[str]) -> dict[str, str]:
    """The names of these clients, as their sign-in pages show them."""
    if not client_ids:
        return {}
    return {client_id: display_name or name for client_id, display_name, name in
            db.session.execute(select(Client.client_id, Client.display_name, Client.name)
                               .where(Client.client_id.in_(client_ids)))}


def connected_applications(user_id: int) -> list[dict]:
    """The applications with the user's consent or a live refresh token."""
    now = utcnow()
    found: dict[str, dict] = {}
    for client_id, scope, granted_at in db.session.execute(
            select(Consent.client_id, Consent.scope, Consent.granted_at)
            .where(Consent.user_id == user_id)):
        found[client_id] = {"scopes": set(scope_to_list(scope or "")), "since": granted_at,
                            "tokens": False}
    for client_id, scope, issued_at in db.session.execute(
            select(Token.client_id, Token.scope, Token.issued_at).where(
                Token.user_id == user_id, Token.revoked_at.is_(None),
                Token.rotated_at.is_(None), Token.refresh_expires_at > now)):
        entry = found.setdefault(client_id, {"scopes": set(), "since": issued_at,
                                             "tokens": False})
        entry["scopes"] |= set(scope_to_list(scope or ""))
        entry["tokens"] = True
        entry["since"] = min(entry["since"], issued_at)
    found.pop(ACCOUNT_CLIENT_ID, None)
    labels = _client_labels(set(found))
    apps = [{"client_id": client_id, "label": labels[client_id],
             "scopes": sorted(entry["scopes"] - {"openid"}), "since": entry["since"],
             "offline": entry["tokens"]}
            for client_id, entry in found.items() if client_id in labels]
    return sorted(apps, key=lambda app: app["label"].lower())


def security_events(user_id: int) -> list[dict]:
    """The user's own audit events of the last 90 days, in plain words."""
    phrases = {**EVENT_PHRASES, **get_registry(current_app).event_phrases}
    since = utcnow() - timedelta(days=EVENTS_DAYS)
    rows = db.session.execute(
        select(AuditEvent.at, AuditEvent.event, AuditEvent.client_id, AuditEvent.ip)
        .where(AuditEvent.user_id == user_id, AuditEvent.at >= since,
               AuditEvent.event.in_(list(phrases)))
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(EVENTS_SHOWN)).all()
    labels = _client_labels({row.client_id for row in rows if row.client_id})
    return [{"at": row.at, "what": phrases[row.event], "app": labels.get(row.client_id)
             if row.client_id != ACCOUNT_CLIENT_ID else None, "ip": row.ip} for row in rows]


def _render(row: SsoSession, status: int = 200, **forms):
    user = row.user
    forms.setdefault("profile_form", ProfileForm(prefix="profile", given_name=user.given_name,
                                                 family_name=user.family_name, formdata=None))
    forms.setdefault("email_form", AccountEmailForm(prefix="email", formdata=None))
    forms.setdefault("password_form", ChangePasswordForm(prefix="password", formdata=None))
    sections = [(s, Markup(s.render(user, row)))  # noqa: S704 - the plugin's own template
                for s in get_registry(current_app).account_sections]
    html = render_template(
        "selfservice/account.html", user=user, current=row, client=None,
        sections=sections, sessions=_live_sessions(user.id),
        applications=connected_applications(user.id), events=security_events(user.id),
        end_form=EndSessionsForm(prefix="sessions"),
        revoke_form=RevokeApplicationForm(prefix="apps"),
        masked_email=mask_email(user.email),
        min_length=password_policy.MIN_LENGTH,
        advised_length=password_policy.ADVISED_LENGTH, **forms)
    return html, status, NO_STORE


@bp.route("/account")
def account():
    row = current_session()
    if not signed_in_enough(row):
        return _sign_in()
    return _render(row)


# --- Profile ------------------------------------------------------------------------------


@bp.route("/account/profile", methods=["POST"])
def account_profile():
    row = account_session()
    form = ProfileForm(prefix="profile")
    if not form.validate_on_submit():
        return _render(row, 400, profile_form=form)
    user = row.user
    user.given_name = form.given_name.data.strip() or None
    user.family_name = form.family_name.data.strip() or None
    user.name = (" ".join(p for p in (user.given_name, user.family_name) if p)[:200]
                 or user.name)
    audit.record("profile_changed", user_id=user.id)
    db.session.commit()
    flash("Your name was saved.", "info")
    return account_return("profile")


@bp.route("/account/email", methods=["POST"])
def account_email():
    """Change the account email: a link goes to the new address; the change is made when
    it is opened, and the old address is told."""
    row = account_session()
    form = AccountEmailForm(prefix="email")
    if not form.validate_on_submit():
        return _render(row, 400, email_form=form)
    if (stale := _needs_fresh(row, "profile")) is not None:
        return stale
    user, address = row.user, form.email.data.strip()
    if not valid_email(address):
        form.email.errors.append("Enter an email address like name@example.com.")
        return _render(row, 400, email_form=form)
    if address.lower() == user.email.lower():
        form.email.errors.append("This is your account email already.")
        return _render(row, 400, email_form=form)
    refused = throttled("account_email", [ratelimit.Limit(
        "account", f"email-change:user:{user.id}", EMAIL_CHANGES_PER_HOUR, 3600)],
        user_id=user.id)
    if refused:
        form.email.errors.append(refused)
        return _render(row, 429, email_form=form)
    minutes = current_app.config["IDP_EMAIL_CHANGE_LINK_MINUTES"]
    token, url = links.new_url(links.CHANGE_EMAIL)
    links.revoke(user.id, links.CHANGE_EMAIL)
    links.store(user.id, address, links.CHANGE_EMAIL, token, minutes)
    audit.record("account_email_change_asked", user_id=user.id, to=mask_email(address))
    db.session.commit()
    try:
        send_email(address, "change_account_email", {"link": url, "link_minutes": minutes,
                                                      "username": user.username},
                   kind="link", user_id=user.id)
    except DeliveryError as exc:
        links.end(token)
        db.session.commit()
        form.email.errors.append(f"We could not send the email: {exc.reason}")
        return _render(row, 400, email_form=form)
    # The current address hears of it now: a change it did not ask for is cancelled by
    # changing the password (which ends the link) before the link is used.
    for notified in notice_addresses_of(user):
        try:
            send_email(notified, "account_email_change_asked",
                       {"new": mask_email(address), "link_minutes": minutes},
                       kind="notice", user_id=user.id)
        except DeliveryError as exc:
            log.warning("email change notice not sent: %s", exc.reason)
    flash(f"We sent a link to {mask_email(address)}. Open it to make it your account email.",
          "info")
    return account_return("profile")


@bp.route("/account/confirm-email-change", methods=["GET", "POST"])
def confirm_email_change():
    """The link sent to a new account email: its button makes the change."""
    token = request.args.get("token", "")
    found = links.find(token, links.CHANGE_EMAIL)
    if found is None:
        return render_template("selfservice/link_expired.html", client=None,
                               what="change your account email"), 400, NO_STORE
    form = ConfirmEmailChangeForm()
    if not form.validate_on_submit():
        return render_template("selfservice/confirm_email_change.html", form=form,
                               client=None, address=found.address), 200, NO_STORE
    user = db.session.get(User, found.user_id)
    if not links.use(found):
        db.session.rollback()
        return render_template("selfservice/link_expired.html", client=None,
                               what="change your account email"), 400, NO_STORE
    old, user.email, user.email_verified = user.email, found.address, True
    links.revoke(user.id, links.CHANGE_EMAIL)
    audit.record("account_email_changed", user_id=user.id, source="account_page",
                 to=mask_email(found.address))
    db.session.commit()
    for address in dict.fromkeys([old, *notice_addresses_of(user)]):
        try:
            send_email(address, "account_email_changed",
                       {"old": mask_email(old), "new": mask_email(found.address)},
                       kind="notice", user_id=user.id)
        except DeliveryError as exc:
            log.warning("email change notice not sent: %s", exc.reason)
    return render_template("selfservice/email_changed.html", client=None,
                           address=found.address), 200, NO_STORE


# --- Password -----------------------------------------------------------------------------


@bp.route("/account/password", methods=["POST"])
def account_password():
    """Change the password: the current one is asked for (the fresh check); every other
    session ends, this one stays."""
    row = account_session()
    form = ChangePasswordForm(prefix="password")
    user = row.user
    if not form.validate_on_submit():
        return _render(row, 400, password_form=form)
    # Guesses of the current password count against the sign-in's limits.
    limits, attempt_at = login_limits(user.username), time.time()
    refused = throttled("account_password", limits, attempt_at, user.id)
    if refused:
        form.current.errors.append(refused)
        return _render(row, 503 if refused == UNAVAILABLE else 429, password_form=form)
    if not verify_password(user.password_hash, form.current.data):
        audit.record("login_failed", user_id=user.id, reason="account_password_change")
        db.session.commit()
        form.current.errors.append("The current password is not correct.")
        return _render(row, 400, password_form=form)
    ratelimit.forget(limits, attempt_at)
    refused = password_policy.problem(form.password.data, user.username, (user.email,))
    if refused or form.password.data != form.confirm.data:
        if refused:
            form.password.errors.append(refused)
        else:
            form.confirm.errors.append(password_policy.MISMATCH)
        return _render(row, 400, password_form=form)
    change_password(user, form.password.data, source="account_page", keep_sid=row.sid)
    flash("Your password was changed. You were signed out everywhere else.", "info")
    return account_return("password")


# --- Where You're Signed In ---------------------------------------------------------------


@bp.route("/account/sessions", methods=["POST"])
def account_sessions():
    """Sign out of one other session (``sid``), or of every other (``others``)."""
    from idp.oauth.logout import send_pending_logouts

    row = account_session()
    form = EndSessionsForm(prefix="sessions")
    if not form.validate_on_submit():
        abort(400)
    query = select(SsoSession).where(SsoSession.user_id == row.user_id,
                                     SsoSession.ended_at.is_(None), SsoSession.id != row.id)
    if not form.others.data:
        query = query.where(SsoSession.sid == (form.sid.data or ""))
    ended = db.session.scalars(query).all()
    for other in ended:
        end_session(other, reason="signed_out_from_account_page")
    if ended:
        audit.record("session_signed_out", user_id=row.user_id, count=len(ended))
    db.session.commit()
    send_pending_logouts()
    flash(f"Signed out of {len(ended)} other browser{'s' if len(ended) != 1 else ''}."
          if ended else "That browser was signed out already.", "info")
    return account_return("sessions")


# --- Connected Applications ---------------------------------------------------------------


@bp.route("/account/applications", methods=["POST"])
def account_applications():
    """Remove an application's access: its consent goes, and every token and code it holds
    for the user is revoked."""
    row = account_session()
    form = RevokeApplicationForm(prefix="apps")
    if not form.validate_on_submit():
        abort(400)
    client_id, user_id = form.client_id.data, row.user_id
    if client_id == ACCOUNT_CLIENT_ID or find_client(client_id) is None:
        abort(400)
    consents = db.session.execute(Consent.__table__.delete().where(
        Consent.user_id == user_id, Consent.client_id == client_id)).rowcount
    tokens, _codes = revoke_tokens_and_codes(user_id, client_id=client_id)
    audit.record("application_access_revoked", user_id=user_id, client_id=client_id,
                 consents=consents, tokens_revoked=tokens)
    db.session.commit()
    flash("The application's access was removed.", "info")
    return account_return("applications")


def account_url() -> str | None:
    """The account page's address for templates, when this browser is signed in (never
    an obstacle to the page: an error page shown because the database is away has none)."""
    if not has_request_context() or COOKIE_SSO not in session:
        return None
    try:
        row = current_session()
    except SQLAlchemyError:
        return None
    return url_for("selfservice.account") if row is not None else None
