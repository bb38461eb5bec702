"""MFA policy: who must enroll, what a session's authentication is worth, and what a sign-in
still needs. Small named functions, each with its own tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from flask import current_app

from idp.plugin_api import AcrLevel, db, epoch, utcnow
from plugins.mfa.models import MfaAccount, MfaFactor

ACR_MFA = "urn:idp:acr:mfa"
ACR_AAL2 = "http://idmanagement.gov/ns/assurance/aal/2"
AAL2_WINDOW = 12 * 3600
REMEMBERED_DEVICE = "rdev"


# --- clients ------------------------------------------------------------------------------


def client_requires_mfa(client) -> bool:
    return (client.settings or {}).get("mfa_policy", "cohort") == "always"


def client_allows_remembered_devices(client) -> bool:
    return bool((client.settings or {}).get("remembered_devices", True))


# --- accounts -----------------------------------------------------------------------------


def required_from() -> date:
    return date.fromisoformat(current_app.config["IDP_MFA_REQUIRED_FROM"])


def enrollment_mandatory(user) -> bool:
    """Accounts created on or after the cutoff must enroll."""
    return user.created_at.date() >= required_from()


def enrolled_factors(user_id: int) -> list[MfaFactor]:
    return list(db.session.scalars(
        db.select(MfaFactor).filter_by(user_id=user_id).order_by(MfaFactor.id)
    ))


def factors_of(ctx) -> list[MfaFactor]:
    """The signed-in user's factors, read once per sign-in context: the steps and the
    challenge ask several times in one run of the pipeline, which adds no factor (a page
    that adds one goes on with a new context, ``continue_sign_in``)."""
    if "mfa_factors" not in ctx.extras:
        ctx.extras["mfa_factors"] = enrolled_factors(ctx.user.id) if ctx.user else []
    return ctx.extras["mfa_factors"]


def is_enrolled(user_id: int) -> bool:
    return db.session.scalar(db.select(MfaFactor.id).filter_by(user_id=user_id)) is not None


def default_kind(user_id: int) -> str | None:
    """The method the account chose to start the challenge with, if any."""
    account = db.session.get(MfaAccount, user_id)
    return account.default_kind if account is not None else None


def recovery_used(user_id: int) -> bool:
    """A recovery code signed the account in, and no method was set up since."""
    account = db.session.get(MfaAccount, user_id)
    return account is not None and account.recovery_used_at is not None


def aal2_possible(user_id: int) -> bool:
    """Whether an enrolled factor can meet the AAL2 alias (email cannot; recovery codes are
    a last resort, not a way to step up)."""
    from plugins.mfa import lockout
    from plugins.mfa.factors import FACTORS

    blocked = lockout.blocked_kinds(user_id)
    return any(FACTORS[f.kind].aal2 for f in enrolled_factors(user_id)
               if f.kind in FACTORS and f.kind not in blocked)


def mfa_email(user) -> str | None:
    account = db.session.get(MfaAccount, user.id)
    if account is None or account.mfa_email_verified_at is None:
        return None
    return account.mfa_email


# --- sessions -----------------------------------------------------------------------------


def _events(session, since: int | None = None):
    for event in (session.events or []) if session is not None else []:
        if since is None or event.get("at", 0) >= since:
            yield event


def second_factor_checked(session, since: int | None = None) -> bool:
    """A factor other than the password was checked (a remembered device is not one)."""
    return any(e.get("factor") not in (None, "password") for e in _events(session, since))


def remembered_device_used(session, since: int | None = None) -> bool:
    return any(e.get("method") == REMEMBERED_DEVICE for e in _events(session, since))


def mfa_met(session, client, since: int | None = None) -> bool:
    if second_factor_checked(session, since):
        return True
    return client_allows_remembered_devices(client) and remembered_device_used(session, since)


def aal2_met(session, client, since: int | None = None) -> bool:
    from plugins.mfa.factors import FACTORS

    window_start = epoch(utcnow()) - AAL2_WINDOW
    since = window_start if since is None else max(since, window_start)
    return any(
        e.get("method") in FACTORS and FACTORS[e["method"]].aal2 for e in _events(session, since)
    )


ACR_LEVELS = [
    AcrLevel(ACR_MFA, rank=20, is_met=lambda session, client: mfa_met(session, client)),
    AcrLevel(ACR_AAL2, rank=30, is_met=lambda session, client: aal2_met(session, client),
             ladder=False),
]


# --- what a sign-in needs -----------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """A second factor is needed for this sign-in, for ``reason``; ``device_ok`` says
    whether a remembered device may stand in for it."""

    reason: str
    device_ok: bool


def freshness(ctx) -> int | None:
    """Events older than this (epoch) don't count: ``prompt=login`` wants this
    interaction's checks, ``max_age`` recent ones."""
    bounds = []
    if "login" in ctx.prompts and ctx.pending.login_at is not None:
        bounds.append(epoch(ctx.pending.login_at))
    if ctx.max_age is not None:
        bounds.append(epoch(utcnow()) - ctx.max_age)
    return max(bounds) if bounds else None


def aal2_step_up(ctx) -> bool:
    """The client asks for the AAL2 alias, it is not met yet, and the account can meet it:
    only an AAL2 factor may end this challenge."""
    return (ACR_AAL2 in ctx.acr_request.all
            and not aal2_met(ctx.session, ctx.client, freshness(ctx))
            and aal2_possible(ctx.user.id))


def requirement(ctx) -> Requirement | None:
    """What the sign-in still needs from an enrolled user's second factor, if anything."""
    from plugins.mfa.progress import progress

    session, client = ctx.session, ctx.client
    current = progress(ctx)
    if current.modify_requested and not current.challenge_passed:
        # Modify MFA Options (from the account page, say) wants the challenge passed in
        # this sign-in, whatever the session proved before.
        return Requirement("modify_requested", device_ok=False)
    if ctx.step_state("core").get("fresh") and not current.challenge_passed:
        # The account page's fresh check before a security change: the person, not a
        # remembered browser.
        return Requirement("fresh_check", device_ok=False)
    wanted = set(ctx.acr_request.all)
    since = freshness(ctx)
    device_ok = client_allows_remembered_devices(client) and ACR_AAL2 not in wanted
    if aal2_step_up(ctx):
        return Requirement("acr_not_met", device_ok=False)
    if ACR_AAL2 in wanted and not aal2_met(session, client, since):
        essential = set(ctx.acr_request.essential)
        if essential and essential <= {ACR_AAL2}:
            # No factor of this account can give what the client insists on: no pointless
            # passcode; the authorization answers unmet_authentication_requirements.
            return None
        # Otherwise the sign-in goes on at the MFA level: asking again for a factor that
        # cannot meet AAL2 would never end.
    if mfa_met(session, client, since):
        return None
    if ACR_MFA in wanted:
        return Requirement("acr_not_met", device_ok)
    if ctx.max_age is not None and mfa_met(session, client):
        return Requirement("max_age", device_ok)
    if remembered_device_used(session) and not client_allows_remembered_devices(client):
        return Requirement("client_policy", device_ok=False)
    return Requirement("new_device", device_ok)


def enrollment_reason(ctx) -> tuple[str, bool] | None:
    """Why an account without MFA is asked to enroll, and whether it may say Not Now."""
    wanted = set(ctx.acr_request.all)
    if wanted & {ACR_MFA, ACR_AAL2}:
        return "acr_not_met", False
    if client_requires_mfa(ctx.client):
        return "client_policy", False
    if enrollment_mandatory(ctx.user):
        return "enrollment_required", False
    return "enrollment_offer", True
