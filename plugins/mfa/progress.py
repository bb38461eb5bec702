"""The MFA plugin's progress in one sign-in, as one typed object.

It is kept in the pending request's ``state["mfa"]``, so it belongs to the user, the SSO
session and the authentication event that made it: the core discards it when any of them
changes (``bind_progress``). Nothing of it lives in the cookie, in ``g`` or in the session.
Read it with :func:`progress`; change it with :meth:`MfaProgress.update`, which saves it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from idp.plugin_api import SignInContext

STATE = "mfa"


@dataclass
class MfaProgress:
    #: Enroll in MFA was chosen on the offer (until a factor is set up).
    enrolling: bool = False
    #: Not Now was chosen on the (optional) offer.
    not_now: bool = False
    #: The factor the challenge asks for, and whether a challenge was passed.
    challenge_factor: str | None = None
    challenge_passed: bool = False
    #: Modify MFA Options was asked for on the challenge (until done or cancelled).
    modify_requested: bool = False
    #: The passcode sent last: its factor, destination and purpose (challenge, enroll,
    #: modify); a destination being set up is confirmed by that code.
    code_factor: str | None = None
    code_destination: str | None = None
    code_purpose: str | None = None
    #: The address the last verification link went to, and why (enroll, modify).
    link_sent_to: str | None = None
    link_purpose: str | None = None
    #: The authentication app's secret being set up, encrypted.
    totp_secret: str | None = None
    #: The account page's reason for this sign-in (``mfa_modify``, ``mfa_enroll``) was
    #: turned into the fields above (once: Cancel or Not Now stay chosen).
    intent_applied: bool = False
    #: After a sign-in with a recovery code: the prompt to set up a new method was answered.
    replacement_answered: bool = False

    def __post_init__(self):
        self._ctx: SignInContext | None = None

    def update(self, **values) -> None:
        """Change fields (an unknown name is an error) and save them in the pending
        request, in this request's transaction."""
        for name, value in values.items():
            if name not in _FIELDS:
                raise AttributeError(f"MfaProgress has no field {name!r}")
            setattr(self, name, value)
        saved = {f.name: getattr(self, f.name) for f in fields(self)
                 if getattr(self, f.name) != f.default}
        self._ctx.save_state(STATE, saved)


_FIELDS = {f.name for f in fields(MfaProgress)}


def progress(ctx: SignInContext) -> MfaProgress:
    """This sign-in's MFA progress (read once per context)."""
    found = ctx.extras.get("mfa_progress")
    if found is None:
        stored = ctx.step_state(STATE)
        found = MfaProgress(**{k: v for k, v in stored.items() if k in _FIELDS})
        found._ctx = ctx
        ctx.extras["mfa_progress"] = found
        _apply_intent(ctx, found)
    return found


#: What the account page's sign-in asks for, by intent: Modify MFA Options after the
#: challenge, or setting MFA up.
INTENTS = {"mfa_modify": {"modify_requested": True}, "mfa_enroll": {"enrolling": True}}


def _apply_intent(ctx: SignInContext, found: MfaProgress) -> None:
    intent = ctx.step_state("core").get("intent")
    if intent in INTENTS and not found.intent_applied and ctx.user is not None:
        found.update(intent_applied=True, **INTENTS[intent])
