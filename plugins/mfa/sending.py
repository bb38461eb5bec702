"""A passcode issued and sent for a sign-in, with the send throttles' answers."""

from __future__ import annotations

from idp.plugin_api import DeliveryError, ThrottledError, audit, db
from plugins.mfa import passcodes
from plugins.mfa.factors import FACTORS
from plugins.mfa.progress import progress


def send_code(ctx, kind: str, destination: str, purpose: str) -> str | None:
    """Issue a passcode and send it; returns an error message for the page, or None.

    The new code is committed together with the send throttle's count (it must be stored
    before it is sent, so that it can be checked the moment it arrives); when a throttle
    refuses, both are rolled back and the code sent earlier stays valid."""
    factor = FACTORS[kind]
    code = passcodes.issue(ctx.user.id, ctx.pending.id, kind, purpose, destination)
    progress(ctx).update(code_factor=kind, code_destination=destination, code_purpose=purpose)
    try:
        factor.send(destination, code, ctx.user.id, ctx.client)
    except ThrottledError as exc:
        if exc.reason == "throttled:destination":
            if passcodes.live_code(ctx.user.id, ctx.pending.id, kind, purpose, destination):
                return exc.user_message  # a Resend too soon: the code sent is still valid
            # The code sent moments ago belongs to another sign-in: it cannot be used here.
            return (f"A passcode was sent to {factor.describe(destination)} moments "
                    f"ago. Wait {exc.retry_after} seconds, then select Resend.")
        return exc.user_message
    except DeliveryError as exc:
        # Never delivered: it must not pass for "the passcode already sent".
        passcodes.revoke(ctx.user.id, ctx.pending.id, kind, purpose)
        db.session.commit()
        return exc.user_message
    audit.record("mfa_passcode_sent", user_id=ctx.user.id, client_id=ctx.client.client_id,
                 factor=kind, purpose=purpose)
    db.session.commit()
    return None
