"""The core's step for accounts made at Create New Account: the account email is verified
by its emailed link before the account signs in to an application."""

from __future__ import annotations

from idp.selfservice.verification import send_verification_on_arrival
from idp.signin.context import SignInContext
from idp.signin.pipeline import Step


class AccountEmailStep(Step):
    name = "account_email"
    endpoint = "selfservice.confirm_email"

    def needed(self, ctx: SignInContext) -> str | None:
        if ctx.user is not None and ctx.user.must_verify_email:
            return "account_email_unverified"
        return None

    def arrive(self, ctx: SignInContext, reason: str) -> None:
        send_verification_on_arrival(ctx)
