"""Second factors behind one interface (see ``base.Factor``)."""

from plugins.mfa.factors.base import Factor
from plugins.mfa.factors.email import EmailFactor
from plugins.mfa.factors.recovery import RecoveryFactor
from plugins.mfa.factors.sms import SmsFactor
from plugins.mfa.factors.totp import TotpFactor

FACTORS: dict[str, Factor] = {
    f.kind: f for f in (SmsFactor(), EmailFactor(), TotpFactor(), RecoveryFactor())
}

# Factors a user can choose to enroll, in the order they are offered.
ENROLLABLE = ("sms", "email", "totp")

__all__ = ["ENROLLABLE", "FACTORS", "EmailFactor", "Factor", "RecoveryFactor", "SmsFactor",
           "TotpFactor"]
