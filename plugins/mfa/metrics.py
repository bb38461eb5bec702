"""The MFA plugin's Prometheus metrics (served with the core's at ``/metrics``).

Labels come from fixed sets only: the factor kind, why the code was asked for and the result.
Passcodes are counted by the core's ``idp_delivery_messages_total`` (channel ``sms`` or
``email``, kind ``passcode``).
"""

from __future__ import annotations

from prometheus_client import Counter

from plugins.mfa.passcodes import Outcome

FACTOR_KINDS = frozenset({"sms", "email", "totp", "recovery"})
PURPOSES = frozenset({"challenge", "enroll", "modify"})

CHECKS = Counter(
    "idp_mfa_challenges_total",
    "Second-factor codes checked, by factor (sms, email, totp, recovery), purpose "
    "(challenge at sign-in, enroll, modify) and result (success, wrong_code, expired, "
    "exhausted, locked).",
    ["factor", "purpose", "result"],
)
LOCKOUTS = Counter(
    "idp_mfa_lockouts_total",
    "Accounts put in the MFA cool-down after too many consecutive failures.",
)

RESULTS = {
    Outcome.OK: "success",
    Outcome.WRONG: "wrong_code",
    Outcome.EXPIRED: "expired",       # no live code (expired, used or replaced)
    Outcome.EXHAUSTED: "exhausted",   # too many wrong tries on this code
}


def checked(factor: str, purpose: str, result: str | Outcome) -> None:
    """A code was checked (``result`` a name, or a passcode :class:`Outcome`); a refusal
    during the cool-down is ``locked``."""
    if isinstance(result, Outcome):
        result = RESULTS[result]
    CHECKS.labels(factor if factor in FACTOR_KINDS else "other",
                  purpose if purpose in PURPOSES else "other", result).inc()


def locked_out() -> None:
    LOCKOUTS.inc()
