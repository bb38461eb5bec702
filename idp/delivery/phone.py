"""US phone numbers for SMS: the usual spellings accepted, E.164 stored, masked when shown."""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

# The United States and its territories share country code +1 with other countries.
US_REGIONS = {"US", "PR", "VI", "GU", "AS", "MP"}
SMS_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}


class PhoneNumberError(ValueError):
    """The number cannot receive our text messages; the message says why."""


def normalize_us_phone(text: str) -> str:
    """Return the E.164 form of a US mobile number, or raise :class:`PhoneNumberError`.

    Accepts ``(202) 555-0143``, ``202-555-0143``, ``2025550143``, ``+1 202 555 0143``…
    """
    text = (text or "").strip()
    if not text:
        raise PhoneNumberError("Enter your mobile phone number.")
    if len(text) > 30:
        raise PhoneNumberError("Enter a 10-digit US phone number, like (202) 555-0143.")
    try:
        number = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        raise PhoneNumberError("Enter a 10-digit US phone number, like (202) 555-0143.") from None
    if number.country_code != 1 or text.startswith("+") and not text.startswith("+1"):
        raise PhoneNumberError("Only US phone numbers are accepted; international numbers "
                               "cannot receive passcodes.")
    if not phonenumbers.is_valid_number(number):
        raise PhoneNumberError("This is not a valid US phone number. Check the area code and "
                               "the number.")
    if phonenumbers.region_code_for_number(number) not in US_REGIONS:
        raise PhoneNumberError("Only US phone numbers are accepted; international numbers "
                               "cannot receive passcodes.")
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.TOLL_FREE:
        raise PhoneNumberError("Toll-free numbers cannot receive passcodes. Enter a mobile "
                               "number.")
    if kind in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST):
        raise PhoneNumberError("Premium-rate numbers cannot receive passcodes. Enter a mobile "
                               "number.")
    if kind not in SMS_TYPES:
        raise PhoneNumberError("This number cannot receive text messages. Enter a mobile "
                               "number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """``+12025550143`` → ``***-***-0143``."""
    return "***-***-" + (e164 or "")[-4:]


def mask_email(address: str) -> str:
    """``newuser@example.com`` → ``n******@example.com``."""
    local, _, domain = (address or "").partition("@")
    if not domain:
        return "***"
    return (local[:1] + "*" * max(1, len(local) - 1)) + "@" + domain
