"""The account pages reached from the sign-in page: Create New Account, Forgot your
username?, Forgot your password? (and the emailed reset link), and the account email's
verification.

None of them tells whether an account or an address exists, except that a user name being
taken is said at Create New Account (a user name must be unique). The emails of Forgot your
username? and Forgot your password? are sent after the answer has gone, so that the answer
takes as long whether or not there was anything to send. None of them signs anyone in but
Create New Account, which continues the sign-in the user came from with the new account.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

from flask import (
    Blueprint,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from idp import audit, password_policy, ratelimit
from idp.accounts import change_password, create_user
from idp.auth.routes import password_proven
from idp.crypto import keyed_digest
from idp.delivery import DeliveryError, mask_email, send_email
from idp.errors import InteractionError
from idp.extensions import db
from idp.models import PendingAuthorization, User, find_client
from idp.selfservice import links
from idp.selfservice.forms import (
    USER_NAME_MAX,
    USER_NAME_MIN,
    USER_NAME_PATTERN,
    USER_NAME_RULE,
    ChangeEmailForm,
    ConfirmEmailForm,
    CreateAccountForm,
    ForgotPasswordForm,
    ForgotUsernameForm,
    NewLinkForm,
    ResetPasswordForm,
    VerifyLinkForm,
)
from idp.selfservice.steps import AccountEmailStep
from idp.selfservice.verification import send_verification
from idp.signals import account_email_verified
from idp.signin.interaction import continue_sign_in, load_interaction, load_pending, resume_url

log = logging.getLogger(__name__)

bp = Blueprint("selfservice", __name__)

# Pages with a password, a link's token or what an account holds are never kept.
NO_STORE = {"Cache-Control": "no-store"}
USER_NAME_TAKEN = "This user name is taken. Choose another one."
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
UNAVAILABLE = "This page is unavailable for a moment. Try again in a minute."


# --- shared -------------------------------------------------------------------------------


def _came_from() -> PendingAuthorization | None:
    """The sign-in this browser came from (``?pending=``), while it can still go on."""
    pending_id = request.args.get("pending", "")
    if not pending_id:
        return None
    try:
        return load_pending(pending_id)
    except InteractionError:
        return None


def _client(pending: PendingAuthorization | None):
    return find_client(pending.client_id) if pending is not None else None


def _page(template: str, status: int = 200, **context):
    return render_template(template, **context), status, NO_STORE


def throttled(page: str, limits: list[ratelimit.Limit], now: float | None = None,
              user_id: int | None = None) -> str | None:
    """Count this request (at ``now``) against ``limits``; the message to show when one is
    reached (``UNAVAILABLE`` when the limits cannot be counted)."""
    try:
        refused = ratelimit.hit(limits, now)
    except ratelimit.RateLimitUnavailable:
        db.session.rollback()
        return UNAVAILABLE
    if refused is None:
        db.session.commit()
        return None
    db.session.rollback()
    limit, retry_after = refused
    audit.record("self_service_throttled", user_id=user_id, page=page, limit=limit.name,
                 retry_after=retry_after)
    db.session.commit()
    minutes = max(1, math.ceil(retry_after / 60))
    return (f"Too many requests from here. For your security, wait {minutes} "
            f"minute{'s' if minutes != 1 else ''} and try again.")


def _per_client_address(kind: str, count: int, window: int) -> ratelimit.Limit:
    return ratelimit.Limit("address", f"{kind}:ip:" + keyed_digest(request.remote_addr or "",
                                                                     kind), count, window)


def recovery_limits(identifier: str) -> list[ratelimit.Limit]:
    """Forgot your username/password: per entered address or user name (whether it exists
    or not) and per client address."""
    config = current_app.config
    window = config["IDP_RECOVERY_LIMIT_WINDOW"]
    return [
        ratelimit.Limit("identifier", "recovery:id:" + keyed_digest(identifier.casefold(),
                                                                    "recovery"),
                        config["IDP_RECOVERY_LIMIT_PER_IDENTIFIER"], window),
        _per_client_address("recovery", config["IDP_RECOVERY_LIMIT_PER_ADDRESS"], window),
    ]


def signup_limits() -> list[ratelimit.Limit]:
    config = current_app.config
    return [
        _per_client_address("signup", config["IDP_SIGNUP_LIMIT_PER_ADDRESS"],
                            config["IDP_SIGNUP_LIMIT_WINDOW"]),
        ratelimit.Limit("global", "signup:global", config["IDP_SIGNUP_LIMIT_GLOBAL_PER_HOUR"],
                        3600),
    ]


def _after_response(response, job: Callable[[], None]):
    """Run ``job`` in an application context once the answer is sent."""
    app = current_app._get_current_object()

    def run() -> None:
        with app.app_context():
            try:
                job()
            except Exception:  # noqa: BLE001 - the answer is gone: log, never raise
                log.exception("a self-service email was not sent")
                db.session.rollback()

    response.call_on_close(run)
    return response


def valid_email(value: str) -> bool:
    return (bool(EMAIL_PATTERN.fullmatch(value)) and len(value) <= 254
            and not any(ord(ch) < 32 for ch in value))


# --- Create New Account -------------------------------------------------------------------


def _account_problems(form: CreateAccountForm) -> dict[str, str]:
    problems = {}
    username = form.username.data
    if not (USER_NAME_MIN <= len(username) <= USER_NAME_MAX
            and re.fullmatch(USER_NAME_PATTERN, username)):
        problems["username"] = "Choose a user name of " + USER_NAME_RULE
    elif db.session.scalar(select(User.id).filter_by(username=username)) is not None:
        problems["username"] = USER_NAME_TAKEN
    email = form.email.data.strip()
    if not valid_email(email):
        problems["email"] = "Enter an email address like name@example.com."
    password = form.password.data
    refused = password_policy.problem(
        password, username, (email, form.given_name.data or "", form.family_name.data or ""))
    if refused:
        problems["password"] = refused
    elif password != form.confirm.data:
        problems["confirm"] = password_policy.MISMATCH
    return problems


def _create(form: CreateAccountForm) -> User | None:
    """The new account, or None when its user name was taken meanwhile."""
    given = (form.given_name.data or "").strip() or None
    family = (form.family_name.data or "").strip() or None
    user = create_user(form.username.data, form.email.data.strip(), form.password.data,
                       name=" ".join(part for part in (given, family) if part) or None)
    user.given_name, user.family_name, user.must_verify_email = given, family, True
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return None
    return user


@bp.route("/account/create", methods=["GET", "POST"])
def create_account():
    pending = _came_from()
    client = _client(pending)
    if not current_app.config["IDP_SELF_REGISTRATION"]:
        return _page("idp/account_help.html", title="Create New Account", client=client)
    form = CreateAccountForm()
    problems: dict[str, str] = {}
    error = None
    if form.validate_on_submit():
        # Counted first: every answer (a user name taken or not) is limited.
        error = throttled("create_account", signup_limits())
        if error is None:
            problems = _account_problems(form)
        if not problems and error is None:
            user = _create(form)
            if user is None:
                problems["username"] = USER_NAME_TAKEN
            else:
                audit.record("account_created", user_id=user.id, source="self_service",
                             client_id=pending.client_id if pending else None)
                if pending is not None:
                    # Choosing the password proves it: the sign-in goes on with the account
                    # (the email's verification first, then enrollment, terms, the app).
                    password_proven(pending, user, "signed_in_at_account_creation")
                    return continue_sign_in(pending)
                db.session.commit()
                failed = send_verification(user, None, None)
                return _page("selfservice/check_email.html", address=mask_email(user.email),
                             error=failed, client=None)
    elif form.is_submitted() and form.errors:
        error = "Please correct the fields below."
    status = 200 if not (problems or form.errors or error) else (
        429 if error and error.startswith("Too many") else 400)
    return _page("selfservice/create_account.html", status, form=form, problems=problems,
                 error=error or (problems and "Please correct the fields below."),
                 client=client, pending=pending, rule=USER_NAME_RULE,
                 min_length=password_policy.MIN_LENGTH,
                 advised_length=password_policy.ADVISED_LENGTH)


# --- the account email's verification -----------------------------------------------------


@bp.route("/account/confirm-email/<pending_id>", methods=["GET", "POST"])
def confirm_email(pending_id: str):
    ctx = load_interaction(pending_id, serves=AccountEmailStep.name)
    user = ctx.user
    confirm, new_link, change = (ConfirmEmailForm(prefix="k"), NewLinkForm(prefix="n"),
                                 ChangeEmailForm(prefix="e"))
    error = None
    changing = request.args.get("change") == "1"
    if request.method == "POST":
        if confirm.submit.data and confirm.validate():
            error = ("We haven't seen the link opened yet. Open the link in the email we sent, "
                     "then select Continue.")
        elif new_link.submit.data and new_link.validate():
            error = send_verification(user, ctx.pending.id, ctx.client)
            if error is None:
                flash("We sent a new link. Links sent earlier no longer work.")
                return redirect(url_for("selfservice.confirm_email", pending_id=pending_id))
        elif change.submit.data:
            changing = True
            if change.validate():
                email = change.email.data.strip()
                if not valid_email(email):
                    change.email.errors = ["Enter an email address like name@example.com."]
                else:
                    previous = user.email
                    # Only while unverified, also when its link is opened at this moment.
                    changed = db.session.execute(
                        update(User).where(User.id == user.id, User.must_verify_email.is_(True))
                        .values(email=email, email_verified=False)
                        .execution_options(synchronize_session=False)).rowcount
                    if changed != 1:
                        db.session.rollback()
                        return redirect(url_for("selfservice.confirm_email",
                                                pending_id=pending_id))
                    user.email = email
                    links.revoke(user.id, links.VERIFY_EMAIL)
                    audit.record("account_email_changed", user_id=user.id,
                                 source="before_verification", to=mask_email(email),
                                 previous=mask_email(previous))
                    db.session.commit()
                    error = send_verification(user, ctx.pending.id, ctx.client)
                    if error is None:
                        return redirect(url_for("selfservice.confirm_email",
                                                pending_id=pending_id))
    return _page("selfservice/confirm_email.html", 400 if error or change.errors else 200,
                 client=ctx.client, address=mask_email(user.email), confirm=confirm,
                 new_link=new_link, change=change, changing=changing, error=error,
                 pending_id=pending_id)


@bp.route("/account/verify-email", methods=["GET", "POST"])
def verify_email_link():
    """The emailed link: a page whose button verifies the account email the link was sent to
    (a mail scanner that opens links verifies nothing). Signs no one in."""
    row = links.find(request.args.get("token", ""), links.VERIFY_EMAIL)
    expired = ("selfservice/link_expired.html", 400)
    if row is None:
        return _page(*expired, client=None, what="verify your email")
    form = VerifyLinkForm()
    if not form.validate_on_submit():
        return _page("selfservice/verify_email.html", form=form, client=None,
                     address=mask_email(row.address))
    # The link works once, and only while the account still has the address it was sent to.
    verified = links.use(row) and db.session.execute(
        update(User).where(User.id == row.user_id, User.email == row.address)
        .values(email_verified=True, must_verify_email=False)
        .execution_options(synchronize_session=False)).rowcount == 1
    if not verified:
        db.session.rollback()
        return _page(*expired, client=None, what="verify your email")
    user = db.session.get(User, row.user_id)
    db.session.refresh(user)
    links.revoke(user.id, links.VERIFY_EMAIL)
    audit.record("account_email_verified", user_id=user.id, to=mask_email(user.email))
    account_email_verified.send(current_app._get_current_object(), user=user)
    db.session.commit()
    pending, client = _live_sign_in(row.pending_id)
    return _page("selfservice/email_verified.html", client=client,
                 continue_url=resume_url(pending) if pending is not None else None)


def _live_sign_in(pending_id: str | None):
    """The sign-in a link was sent from, when it goes on in this browser, and its client."""
    if not pending_id:
        return None, None
    try:
        pending = load_pending(pending_id)
    except InteractionError:
        return None, None
    return pending, _client(pending)


# --- Forgot your username? ----------------------------------------------------------------


@bp.route("/account/forgot-username", methods=["GET", "POST"])
def forgot_username():
    pending = _came_from()
    client = _client(pending)
    form = ForgotUsernameForm()
    error = None
    if form.validate_on_submit():
        email = form.email.data.strip()
        if not valid_email(email):
            form.email.errors = ["Enter an email address like name@example.com."]
        else:
            error = throttled("forgot_username", recovery_limits(email))
        if error is None and not form.email.errors:
            rows = db.session.execute(
                select(User.email, User.username)
                .where(func.lower(User.email) == email.lower(), User.disabled.is_(False),
                       User.must_verify_email.is_(False))
                .order_by(User.username)).all()
            audit.record("username_reminder_asked", found=len(rows), to=mask_email(email))
            db.session.commit()
            by_address: dict[str, list[str]] = {}
            for address, username in rows:
                by_address.setdefault(address, []).append(username)
            response = make_response(_page(
                "selfservice/sent.html", client=client, pending=pending,
                title="Check Your Email",
                message=("If an account uses that email address, we sent its user name to it. "
                         "The email can take a few minutes to arrive; check your spam folder "
                         "too.")))

            def send() -> None:
                for address, usernames in by_address.items():
                    try:
                        send_email(address, "username_reminder", {"usernames": usernames},
                                   kind="notice", client=client)
                    except DeliveryError as exc:
                        log.warning("user name reminder not sent: %s", exc.reason)

            return _after_response(response, send)
    status = 200 if not (form.errors or error) else 429 if error else 400
    return _page("selfservice/forgot_username.html", status, form=form, error=error,
                 client=client, pending=pending)


# --- Forgot your password? ----------------------------------------------------------------


def _accounts_named(identifier: str) -> list[User]:
    """The account with that user name, else (for an address) the accounts using it."""
    if "\x00" in identifier:
        return []
    # An account whose email was never verified gets nothing: its address may not be its
    # owner's (and mail to it must not crowd out the mail of the address's owner).
    user = db.session.scalar(select(User).filter_by(username=identifier, disabled=False,
                                                    must_verify_email=False))
    if user is not None:
        return [user]
    if "@" not in identifier:
        return []
    return list(db.session.scalars(select(User).where(
        func.lower(User.email) == identifier.lower(), User.disabled.is_(False),
        User.must_verify_email.is_(False)).order_by(User.id).limit(10)))


@bp.route("/account/forgot-password", methods=["GET", "POST"])
def forgot_password():
    pending = _came_from()
    client = _client(pending)
    form = ForgotPasswordForm()
    error = None
    if form.validate_on_submit():
        identifier = form.username.data.strip()
        error = throttled("forgot_password", recovery_limits(identifier))
        if error is None:
            minutes = current_app.config["IDP_RESET_LINK_MINUTES"]
            sends = []
            for user in _accounts_named(identifier):
                # Stored after the answer with the email, so that the answer's time does not
                # depend on whether an account matched.
                token, url = links.new_url(links.RESET_PASSWORD)
                sends.append((user.id, user.email, user.username, token, url))
                audit.record("password_reset_asked", user_id=user.id,
                             client_id=pending.client_id if pending else None)
            if not sends:
                audit.record("password_reset_asked", user_id=None, found=0)
            db.session.commit()
            response = make_response(_page(
                "selfservice/sent.html", client=client, pending=pending,
                title="Check Your Email",
                message=("If an account matches what you entered, we sent a link to reset its "
                         f"password to the account's email address. The link works once, "
                         f"within {minutes} minutes. The email can take a few minutes to "
                         "arrive; check your spam folder too.")))

            pending_id = pending.id if pending is not None else None

            def send() -> None:
                for user_id, address, username, token, url in sends:
                    links.store(user_id, address, links.RESET_PASSWORD, token, minutes,
                                pending_id)
                    db.session.commit()
                    _send_reset_link(user_id, address, username, token, url, minutes, client)

            return _after_response(response, send)
    status = 200 if not (form.errors or error) else 429 if error else 400
    return _page("selfservice/forgot_password.html", status, form=form, error=error,
                 client=client, pending=pending)


def _send_reset_link(user_id, address, username, token, url, minutes, client) -> None:
    try:
        send_email(address, "password_reset", {"link": url, "link_minutes": minutes,
                                               "username": username},
                   kind="link", user_id=user_id, client=client)
    except DeliveryError as exc:
        log.warning("password reset link not sent: %s", exc.reason)
        links.end(token)  # never sent: it must not work
        db.session.commit()
        return
    # Sending a new link ends the earlier ones.
    links.revoke(user_id, links.RESET_PASSWORD, keep=token)
    db.session.commit()


@bp.route("/account/reset-password", methods=["GET", "POST"])
def reset_password():
    """The emailed link: a new password. It ends every session and token of the account and
    signs no one in: the user signs in with the new password (and MFA) afterwards."""
    token = request.args.get("token", "")
    row = links.find(token, links.RESET_PASSWORD)
    if row is None:
        return _page("selfservice/link_expired.html", 400, client=None,
                     what="reset your password")
    user = db.session.get(User, row.user_id)
    form = ResetPasswordForm()
    if form.validate_on_submit():
        refused = password_policy.problem(form.password.data, user.username, (user.email,))
        if refused:
            form.password.errors = [refused]
        elif form.password.data != form.confirm.data:
            form.confirm.errors = [password_policy.MISMATCH]
        elif not links.use(row):
            db.session.rollback()
            return _page("selfservice/link_expired.html", 400, client=None,
                         what="reset your password")
        else:
            links.revoke(user.id, links.RESET_PASSWORD)
            audit.record("password_reset", user_id=user.id)
            change_password(user, form.password.data, source="password_reset")
            pending, client = _live_sign_in(row.pending_id)
            return _page("selfservice/reset_done.html", client=client,
                         sign_in_url=(url_for("auth.login", pending_id=pending.id)
                                      if pending is not None else None))
    status = 400 if form.errors else 200
    return _page("selfservice/reset_password.html", status, form=form, client=None,
                 username=user.username,
                 error=form.errors and "Please correct the fields below.",
                 min_length=password_policy.MIN_LENGTH,
                 advised_length=password_policy.ADVISED_LENGTH)
