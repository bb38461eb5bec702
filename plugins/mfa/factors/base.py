"""The factor interface. A new kind of factor (WebAuthn, say) is a new small class here."""

from __future__ import annotations


class Factor:
    """A second factor.

    ``amr`` are the RFC 8176 values it adds to the ID token; ``group`` names the factor for
    counting distinct factors (``mfa``): two methods of one group are one factor. ``aal2``
    says whether it counts toward the NIST AAL2 alias (email does not). ``sends_code`` is
    true for factors that deliver a passcode (SMS, email).
    """

    kind: str = ""
    label: str = ""
    amr: tuple[str, ...] = ()
    group: str = ""
    aal2: bool = False
    sends_code: bool = False

    def event(self) -> dict:
        """The authentication event recorded in the SSO session when the factor passes."""
        return {"method": self.kind, "amr": list(self.amr), "factor": self.group}

    def describe(self, destination: str | None) -> str:
        """Where the code went, for "Please enter the passcode sent to …"."""
        return ""
