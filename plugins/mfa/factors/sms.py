from __future__ import annotations

from idp.plugin_api import mask_phone, send_sms
from plugins.mfa.factors.base import PasscodeFactor


class SmsFactor(PasscodeFactor):
    kind = "sms"
    label = "SMS"
    amr = ("sms", "otp")
    group = "phone"
    aal2 = True
    modify_option, modify_label, modify_endpoint = "phone", "Phone", "mfa.phone"
    setup_endpoint = "mfa.phone"
    contact_name = "phone number"
    notify_old_destination_by_sms = True

    def describe(self, destination):
        return f"the phone number {mask_phone(destination)}"

    def mask(self, destination):
        return mask_phone(destination)

    def send(self, destination: str, code: str, user_id: int, client=None) -> None:
        send_sms(destination, "passcode", {"code": code}, kind="passcode", user_id=user_id,
                 client=client)
