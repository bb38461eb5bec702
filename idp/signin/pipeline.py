"""The sign-in pipeline: an ordered list of steps, asked in turn whether they are needed.

Each step looks at the sign-in context (the pending authorization request, the user, the
SSO session) and answers with a reason string (``no_session``, ``max_age``,
``terms_not_accepted``…) or ``None``. The first step that is needed is the sign-in's
*current step*: the browser goes to its page, and only that page acts
(:func:`idp.signin.interaction.load_interaction`). When the page is done the pipeline runs
again. When no step is needed the authorization request is answered.

The password step comes first and Consent and Terms last; plugins add their steps in
between (see ``idp.plugins``).
"""

from __future__ import annotations

from idp.signin.context import SignInContext
from idp.timeutil import epoch, utcnow


class Step:
    """A sign-in step. Subclasses set ``name`` and ``endpoint`` and implement ``needed``.

    ``endpoint`` is a Flask endpoint taking a ``pending_id`` argument: the step's page. The
    page loads its sign-in with ``load_interaction(pending_id, serves=<step name>)``, which
    sends the browser back to the pipeline unless this step is the current one, and answers
    with ``continue_sign_in(ctx.pending)`` once the step is done.
    ``prompt_none_error`` is the error answered under ``prompt=none`` when the step is
    needed. Example::

        class FavouriteColourStep(Step):
            name = "colour"
            endpoint = "colour.ask"

            def needed(self, ctx):
                if ctx.user and not ctx.user.colour:
                    return "colour_missing"
                return None
    """

    name: str = ""
    endpoint: str = ""
    prompt_none_error: str = "interaction_required"
    #: A silent step has no page: when it is needed the pipeline calls ``run_silently``
    #: (which must make it no longer needed) and runs again. Also under ``prompt=none``.
    silent: bool = False

    def needed(self, ctx: SignInContext) -> str | None:
        raise NotImplementedError

    def run_silently(self, ctx: SignInContext) -> None:
        raise NotImplementedError

    def arrive(self, ctx: SignInContext, reason: str) -> None:
        """The sign-in is handed to this step's page, in the request that sends the browser
        there (a form's answer or the authorization request), never in the page's own GET:
        what must happen once on arrival (a challenge sends its passcode) happens here."""


class Pipeline:
    def __init__(self, steps: list[Step]):
        self.steps = steps

    def next_step(self, ctx: SignInContext) -> tuple[Step, str] | None:
        for step in self.steps:
            reason = step.needed(ctx)
            if reason:
                return step, reason
        return None


def session_age_exceeded(ctx: SignInContext) -> bool:
    if ctx.max_age is None or ctx.session is None:
        return False
    # max_age=0 asks for a fresh authentication, like prompt=login (OIDC Core 3.1.2.1).
    return ctx.max_age == 0 or epoch(utcnow()) - epoch(ctx.session.auth_time) > ctx.max_age
