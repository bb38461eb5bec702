"""The MFA plugin's sign-in steps, in pipeline order: the enrollment offer, email
verification, method choice (enrollment), a remembered device (silent), the challenge, and
Modify MFA Options. Each answers "needed?" with a reason string or None."""

from __future__ import annotations

from idp.plugin_api import SignInContext, Step, record_authentication, utcnow
from plugins.mfa import challenges, devices, policy
from plugins.mfa.progress import progress


def enrolling(ctx: SignInContext) -> bool:
    return (ctx.user is not None and progress(ctx).enrolling
            and not policy.is_enrolled(ctx.user.id))


def enrolled(ctx: SignInContext) -> bool:
    """Whether the signed-in user has a factor (read once per context, ``factors_of``)."""
    return ctx.user is not None and bool(policy.factors_of(ctx))


def modify_allowed(ctx: SignInContext) -> bool:
    """Modify MFA Options was asked for and the challenge passed, by this user in this
    authentication event: the progress says so (it is bound to both, see
    ``bind_progress``) and the session's current event holds the second factor."""
    current = progress(ctx)
    return (ctx.user is not None and current.modify_requested and current.challenge_passed
            and policy.second_factor_checked(ctx.session))


class EnrollOfferStep(Step):
    name = "mfa_offer"
    endpoint = "mfa.offer"

    def needed(self, ctx):
        if ctx.user is None or enrolled(ctx) or progress(ctx).enrolling:
            return None
        reason, optional = policy.enrollment_reason(ctx)
        if optional and ctx.step_state("core").get("account_page"):
            return None  # the account page offers it in its MFA Methods section
        if optional and (progress(ctx).not_now or not ctx.logged_in_this_interaction):
            # Asked again at a later sign-in, not at every single sign-on.
            return None
        return reason


class VerifyEmailStep(Step):
    name = "mfa_verify_email"
    endpoint = "mfa.verify_email"

    def needed(self, ctx):
        if enrolling(ctx) and policy.mfa_email(ctx.user) is None:
            return "email_unverified"
        return None


class ChooseMethodStep(Step):
    name = "mfa_enroll"
    endpoint = "mfa.enroll"

    def needed(self, ctx):
        return "no_factor" if enrolling(ctx) else None


class RememberedDeviceStep(Step):
    name = "mfa_remembered_device"
    silent = True

    def needed(self, ctx):
        if not enrolled(ctx):
            return None
        need = policy.requirement(ctx)
        if need is not None and need.device_ok and devices.current_device(ctx.user.id):
            return "remembered_device"
        return None

    def run_silently(self, ctx):
        device = devices.current_device(ctx.user.id)
        device.last_used_at = utcnow()
        record_authentication(ctx.user, {"method": policy.REMEMBERED_DEVICE,
                                         "amr": [policy.REMEMBERED_DEVICE], "factor": None})


class ChallengeStep(Step):
    name = "mfa_challenge"
    endpoint = "mfa.challenge"

    def needed(self, ctx):
        if not enrolled(ctx):
            return None
        need = policy.requirement(ctx)
        return need.reason if need is not None else None

    def arrive(self, ctx, reason):
        challenges.arrive(ctx)


def replacement_due(ctx) -> bool:
    """A recovery code was used to sign in and no method was set up since: the sign-in
    asks for a new one (unless answered in this sign-in; the next one asks again)."""
    if ctx.user is None or not enrolled(ctx):
        return False
    current = progress(ctx)
    if current.replacement_answered or current.modify_requested:
        return False
    if not (ctx.logged_in_this_interaction or current.challenge_passed):
        return False  # asked at a sign-in, not at every single sign-on
    if not (current.challenge_passed or policy.mfa_met(ctx.session, ctx.client)):
        return False  # the password alone learns nothing of the account's MFA
    return policy.recovery_used(ctx.user.id)


class ReplaceFactorStep(Step):
    name = "mfa_replace_factor"
    endpoint = "mfa.replace_factor"

    def needed(self, ctx):
        return "recovery_code_used" if replacement_due(ctx) else None


class ModifyStep(Step):
    name = "mfa_modify"
    endpoint = "mfa.modify"

    def needed(self, ctx):
        return "modify_requested" if modify_allowed(ctx) else None


STEPS = [EnrollOfferStep(), VerifyEmailStep(), ChooseMethodStep(), RememberedDeviceStep(),
         ChallengeStep(), ReplaceFactorStep(), ModifyStep()]
