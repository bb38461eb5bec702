"""The core's own sign-in steps: password first, then (after plugins) consent and terms."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import scope_to_list

from idp.extensions import db
from idp.models import Consent, TermsAcceptance
from idp.security import digest
from idp.signin.context import SignInContext
from idp.signin.pipeline import Step, session_age_exceeded

# Scopes a user must agree to explicitly, once per client.
CONSENT_SCOPES = {"offline_access"}


class PasswordStep(Step):
    name = "login"
    endpoint = "auth.login"
    prompt_none_error = "login_required"

    def needed(self, ctx: SignInContext) -> str | None:
        if ctx.session is None:
            return "no_session"
        if ctx.logged_in_this_interaction:
            return None
        if "login" in ctx.prompts:
            return "login_prompt"
        if session_age_exceeded(ctx):
            return "max_age"
        hint_sub = ctx.step_state("core").get("id_token_hint_sub")
        if hint_sub and ctx.user is not None and hint_sub != ctx.user.sub:
            return "id_token_hint_other_user"
        return None


class ConsentStep(Step):
    name = "consent"
    endpoint = "auth.consent"
    prompt_none_error = "consent_required"

    def needed(self, ctx: SignInContext) -> str | None:
        if ctx.step_state(self.name).get("given"):
            return None
        if "consent" in ctx.prompts:
            return "consent_prompt"
        wanted = CONSENT_SCOPES & set(ctx.scopes) & set(scope_to_list(ctx.client.scope))
        if not wanted:
            return None
        granted = db.session.scalar(
            db.select(Consent.scope).filter_by(user_id=ctx.user.id, client_id=ctx.client.client_id)
        )
        if not wanted <= set(scope_to_list(granted or "")):
            return "consent_missing"
        return None


class TermsStep(Step):
    name = "terms"
    endpoint = "auth.terms"
    prompt_none_error = "interaction_required"

    def needed(self, ctx: SignInContext) -> str | None:
        if not ctx.client.terms_text:
            return None
        accepted = db.session.scalar(
            db.select(TermsAcceptance.terms_digest).filter_by(
                user_id=ctx.user.id, client_id=ctx.client.client_id
            )
        )
        if accepted != digest(ctx.client.terms_text):
            return "terms_not_accepted"
        return None
