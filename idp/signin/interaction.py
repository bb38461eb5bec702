"""The interaction: a pending sign-in loaded for a step's page, the pipeline run again, the
sign-in completed or declined.

- :func:`load_interaction` is how every step's page (the core's and every plugin's) loads
  its sign-in. The page says which step it serves; unless that step is the sign-in's
  current step for the user signed in now, the browser goes back to the pipeline. No page
  guards itself by hand.
- :func:`continue_sign_in` is the one way back to the pipeline once a page is done;
  :func:`resume_url` is the address that does the same from a link or a redirect.
- :func:`deny` answers ``access_denied`` (the user declined).
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import abort, current_app, redirect, request, url_for
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value

from idp import audit
from idp.auth.sessions import browser_id, current_session
from idp.errors import InteractionError
from idp.extensions import db
from idp.models import Client, PendingAuthorization
from idp.models.client import client_columns, remember_client
from idp.oauth.authorization_response import answer, respond_error
from idp.security import digest
from idp.signin.context import SignInContext, load_context
from idp.signin.pipeline import Pipeline
from idp.timeutil import utcnow


def pipeline() -> Pipeline:
    return current_app.extensions["idp.pipeline"]


def load_pending(pending_id: str) -> PendingAuthorization:
    """The pending request of this browser with that id, or an explanatory error page."""
    known = len(pending_id) < 64 and "\x00" not in pending_id  # never an id we issued
    # The pending request with its client, in one query: every sign-in page needs both.
    row = db.session.execute(
        select(PendingAuthorization, *client_columns())
        .outerjoin(Client, Client.client_id == PendingAuthorization.client_id)
        .where(PendingAuthorization.id == pending_id)).first() if known else None
    pending = row[0] if row is not None else None
    if pending is None or pending.expires_at <= utcnow():
        raise InteractionError(
            "This sign-in page has expired (a sign-in must be finished within a limited "
            "time). Go back to the application and sign in again.",
            title="Sign-in expired",
        )
    if pending.browser_digest != digest(browser_id()):
        raise InteractionError(
            "This sign-in was started in another browser (or this browser's cookies were "
            "cleared since), so it cannot be continued here. Go back to the application in "
            "this browser and sign in again.",
            title="Sign-in started elsewhere",
        )
    if pending.completed_at is not None:
        raise _finished_already()
    # Only now is the client this request's: an error page above belongs to no client (its
    # Content-Security-Policy names none of a client's origins).
    remember_client(row)
    return pending


def load_interaction(pending_id: str, serves: str | Iterable[str]) -> SignInContext:
    """The sign-in of this browser's pending request ``pending_id``, for the page of the
    step (or steps) named in ``serves``.

    Its progress is bound to the user signed in now (``load_context``). The pipeline runs:
    unless one of ``serves`` is the current step, the browser goes back to the pipeline
    (the password first, the step ahead, or the answer to the client), and the page does
    nothing. A form posted after another user, session or authentication event took the
    sign-in over was filled in for someone else: it does nothing either. ``ctx.step`` and
    ``ctx.reason`` say which step the page serves and why it is needed."""
    names = {serves} if isinstance(serves, str) else set(serves)
    ctx = load_context(load_pending(pending_id), current_session())
    found = None
    if not (ctx.progress_discarded and request.method == "POST"):
        found = pipeline().next_step(ctx)
    if found is None or found[0].name not in names:
        db.session.commit()  # a discarded progress stays discarded
        abort(redirect(resume_url(ctx.pending)))
    ctx.step, ctx.reason = found
    return ctx


def _finished_already() -> InteractionError:
    return InteractionError(
        "This sign-in was finished already. Go back to the application; if you are not "
        "signed in there, sign in again from the application.",
        title="Sign-in already finished",
    )


def complete(pending: PendingAuthorization) -> None:
    """Mark the pending request finished, atomically: of several requests finishing the
    same sign-in at once (tabs of one browser, on any instance), only one answers the
    client; the others are told it was finished already."""
    db.session.flush()
    now = utcnow()
    claimed = db.session.execute(
        update(PendingAuthorization)
        .where(PendingAuthorization.id == pending.id,
               PendingAuthorization.completed_at.is_(None))
        .values(completed_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.session.rollback()
        raise _finished_already()
    set_committed_value(pending, "completed_at", now)


def pending_id_of(pending: PendingAuthorization) -> str:
    """The id of a stored pending request, without reloading it after a commit."""
    identity = sa_inspect(pending).identity
    return identity[0] if identity else pending.id


def resume_url(pending: PendingAuthorization) -> str:
    """``/authorize/resume/<id>``: runs the pipeline for the sign-in (see ``run``)."""
    return url_for("oauth.resume", pending_id=pending_id_of(pending))


def continue_sign_in(pending: PendingAuthorization):
    """A step's page is done: run the pipeline again in this request and answer with the
    next step's page (a redirect) or the answer to the client. The same as sending the
    browser to ``resume_url(pending)``, one round trip sooner.

    Under ``response_mode=form_post`` the answer is a page of its own (the form that posts
    to the client): the browser is sent to ``/authorize/resume`` for it, so that reloading
    that page never submits the step's form again.

    The step's work done in this request is committed with the pipeline's."""
    if pending.params.get("response_mode") == "form_post":
        url = resume_url(pending)
        db.session.commit()
        return redirect(url)
    return run(pending)


def run(pending: PendingAuthorization):
    """Run the pipeline for a pending request: silent steps are run, then the browser goes
    to the current step's page (the step's ``arrive`` first), or the client is answered."""
    # load_context binds the request's progress to this session: when the session changed
    # under it (signed out, another user signed in in another tab), it starts over.
    ctx = load_context(pending, current_session())
    prompt_none = "none" in ctx.prompts
    found = pipeline().next_step(ctx)
    for _ in range(len(pipeline().steps)):
        if found is None or not found[0].silent:
            break
        step, reason = found
        _audit_step(ctx, step, reason)
        step.run_silently(ctx)
        ctx = load_context(pending, current_session())
        found = pipeline().next_step(ctx)
    if found is None:
        complete(pending)
        return answer(ctx)
    step, reason = found
    _audit_step(ctx, step, reason)
    if prompt_none:
        complete(pending)
        db.session.commit()
        return respond_error(pending.params, step.prompt_none_error,
                             f"User interaction is needed ({reason}).")
    step.arrive(ctx, reason)
    db.session.commit()
    return redirect(url_for(step.endpoint, pending_id=pending_id_of(pending)))


def _audit_step(ctx: SignInContext, step, reason: str) -> None:
    audit.record("sign_in_step", user_id=ctx.user.id if ctx.user else None,
                 client_id=ctx.pending.client_id, step=step.name, reason=reason)


def deny(pending: PendingAuthorization, reason: str):
    """The user declined (consent or terms): tell the client ``access_denied``."""
    complete(pending)
    audit.record("authorization_denied", user_id=pending.user_id, client_id=pending.client_id,
                 reason=reason)
    db.session.commit()
    return respond_error(pending.params, "access_denied", "The user declined.")
