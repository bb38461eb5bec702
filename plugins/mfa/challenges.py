"""What a challenge offers (the factors usable now, in order) and how it starts: a factor
that sends a passcode sends it when the sign-in arrives at the challenge or when the person
asks for another method, never when the page is only shown."""

from __future__ import annotations

from flask import flash, request

from plugins.mfa import lockout, passcodes, policy
from plugins.mfa.factors import FACTORS
from plugins.mfa.models import MfaFactor
from plugins.mfa.progress import progress
from plugins.mfa.sending import send_code

STILL_VALID = "The passcode already sent is still valid."


def available(ctx) -> tuple[list[str], dict[str, MfaFactor]]:
    """The factors this challenge may offer, in order, and the user's factor rows by kind.

    A kind blocked after too many failures in a row is not offered. On a POST it stays in
    the list, last, so that an answer typed on a page shown before the block is refused as
    such rather than checked as a code of another factor. When every factor is blocked, one
    of them is kept (one that meets AAL2 first) for the page to say what to do. A step-up to
    the AAL2 alias offers only the factors that meet it."""
    user_id = ctx.user.id
    rows = {f.kind: f for f in policy.factors_of(ctx)}
    kinds = [kind for kind, factor in FACTORS.items() if factor.usable(user_id, rows)]
    blocked = lockout.blocked_kinds(user_id) if kinds else set()
    if blocked:
        usable = [k for k in kinds if k not in blocked]
        if request.method == "POST":
            kinds = usable + [k for k in kinds if k in blocked]
        else:
            kinds = usable or sorted(kinds, key=lambda k: not FACTORS[k].aal2)[:1]
    if policy.aal2_step_up(ctx):
        kinds = [k for k in kinds if FACTORS[k].aal2]
    return kinds, rows


def chosen(ctx, kinds: list[str], wanted: str | None = None) -> str | None:
    """The factor the challenge asks for: ``wanted`` when offered, else the one chosen
    before, else the first offered. The choice is kept in the sign-in's progress."""
    if not kinds:
        return None
    current = progress(ctx)
    kind = wanted if wanted in kinds else current.challenge_factor
    if kind not in kinds:
        kind = policy.default_kind(ctx.user.id)
    if kind not in kinds:
        kind = kinds[0]
    if current.challenge_factor != kind:
        current.update(challenge_factor=kind)
    return kind


def start(ctx, kind: str, rows: dict[str, MfaFactor]) -> str | None:
    """Start the challenge with ``kind``: send its passcode unless a live one was sent for
    this challenge (or the factor is locked). Returns an error message, or None."""
    factor = FACTORS[kind]
    if not factor.sends_code:
        return None
    if lockout.locked_until(ctx.user.id) or lockout.is_blocked(ctx.user.id, kind):
        return None  # the page says why no code comes
    destination = rows[kind].destination
    if (progress(ctx).code_purpose == "challenge"
            and passcodes.live_code(ctx.user.id, ctx.pending.id, kind, "challenge",
                                    destination) is not None):
        flash(STILL_VALID, "info")
        return None
    error = send_code(ctx, kind, destination, "challenge")
    if error is None:
        flash(f"We sent a passcode to {factor.describe(destination)}.", "info")
    return error


def arrive(ctx) -> None:
    """The sign-in arrives at the challenge: it starts with the factor it asks for; what
    went wrong sending is told on the page."""
    kinds, rows = available(ctx)
    kind = chosen(ctx, kinds)
    if kind is not None:
        error = start(ctx, kind, rows)
        if error:
            flash(error, "error")
