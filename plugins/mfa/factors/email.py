from __future__ import annotations

from idp.plugin_api import mask_email, send_email
from plugins.mfa.factors.base import PasscodeFactor


class EmailFactor(PasscodeFactor):
    kind = "email"
    label = "Email"
    amr = ("email", "otp")
    group = "email"
    aal2 = False  # an email inbox is not a NIST AAL2 authenticator
    modify_option, modify_label, modify_endpoint = "email", "Email", "mfa.modify_email"
    contact_name = "email address"

    def describe(self, destination):
        return f"the email address {mask_email(destination)}"

    def mask(self, destination):
        return mask_email(destination)

    def send(self, destination: str, code: str, user_id: int, client=None) -> None:
        send_email(destination, "passcode", {"code": code}, kind="passcode", user_id=user_id,
                   client=client)
