"""The factor interface: what a second factor is and does, at enrollment and at a challenge.

Pages never branch on a factor's kind: they ask the factor. A new kind of factor (WebAuthn,
say) is a new file here (a subclass registered in ``FACTORS``) plus its set-up page and
templates.
"""

from __future__ import annotations

from idp.plugin_api import utcnow
from plugins.mfa import passcodes


class Factor:
    """A second factor.

    - ``amr`` are the RFC 8176 values it adds to the ID token; ``group`` names the factor
      for counting distinct factors (``mfa``): two methods of one group are one factor.
      ``aal2`` says whether it counts toward the NIST AAL2 alias (email does not).
    - ``sends_code``: the challenge starts by sending a passcode (:class:`PasscodeFactor`);
      otherwise the person has the answer already (an app's code, a recovery code).
    - ``setup_endpoint``: the page that sets it up (enrollment or Modify MFA Options), or
      None when it is set up by a passcode sent to the account's verified MFA email.
    - ``answer_label`` and :meth:`instructions`: what the challenge page asks for;
      ``choice_label``: its button under the challenge's "Use another method" (``label``
      when empty).
    """

    kind: str = ""
    label: str = ""
    amr: tuple[str, ...] = ()
    group: str = ""
    aal2: bool = False
    sends_code: bool = False
    setup_endpoint: str | None = None
    answer_label: str = "Passcode"
    choice_label: str = ""
    #: Whether the answer is a one-time code browsers may fill in from a message.
    one_time_code: bool = True
    #: On Modify MFA Options: the option's value and label, and the page that changes it
    #: (None: not offered there).
    modify_option: str = ""
    modify_label: str = ""
    modify_endpoint: str | None = None
    #: What its destination is called in a notice ("phone number"), when it has one.
    contact_name: str = ""
    #: A change of destination is also told to the old destination by SMS.
    notify_old_destination_by_sms: bool = False

    def event(self) -> dict:
        """The authentication event recorded in the SSO session when the factor passes."""
        return {"method": self.kind, "amr": list(self.amr), "factor": self.group}

    def describe(self, destination: str | None) -> str:
        """Where the code went, for "Please enter the passcode sent to …"."""
        return ""

    def mask(self, destination: str | None) -> str | None:
        """The destination as lists show it (masked), or None."""
        return None

    def instructions(self, destination: str | None) -> str:
        """The challenge page's sentence that says what to enter."""
        return f"Enter the code from {self.describe(destination)}."

    def passed_notice(self, user_id: int) -> tuple[str, dict]:
        """The email template (and its values) telling the person a challenge passed."""
        return "new_device_sign_in", {"when": utcnow().strftime("%B %-d, %Y at %H:%M UTC")}

    def usable(self, user_id: int, enrolled: dict) -> bool:
        """Whether a challenge may offer it; ``enrolled`` maps kinds to the user's rows."""
        return self.kind in enrolled

    def check(self, user_id: int, pending_id: str, row, answer: str,
              purpose: str) -> tuple[bool, passcodes.Outcome | None]:
        """Check an answer given at a challenge: (passed, the passcode's outcome, or None
        for factors without passcodes). Each answer works once."""
        raise NotImplementedError


class PasscodeFactor(Factor):
    """A factor that sends a passcode to a destination (a phone, an email address)."""

    sends_code = True

    def instructions(self, destination):
        return (f"Please enter the passcode sent to {self.describe(destination)}. It expires "
                "5 minutes after it was sent.")

    def send(self, destination: str, code: str, user_id: int, client=None) -> None:
        raise NotImplementedError

    def check(self, user_id, pending_id, row, answer, purpose):
        outcome = passcodes.verify(user_id, pending_id, self.kind, purpose,
                                   row.destination if row is not None else None, answer)
        return outcome is passcodes.Outcome.OK, outcome
