from __future__ import annotations

from idp.plugin_api import mask_phone, send_sms
from plugins.mfa.factors.base import Factor


class SmsFactor(Factor):
    kind = "sms"
    label = "SMS"
    amr = ("sms", "otp")
    group = "phone"
    aal2 = True
    sends_code = True

    def describe(self, destination):
        return f"the phone number {mask_phone(destination)}"

    def send(self, destination: str, code: str, user_id: int, client=None) -> None:
        send_sms(destination, "passcode", {"code": code}, kind="passcode", user_id=user_id,
                 client=client)
