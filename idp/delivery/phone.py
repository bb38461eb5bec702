"""US phone numbers for SMS: the usual spellings accepted, E.164 stored, masked when shown."""

from __future__ import annotations

import phonenumbers
from phonenumbers import PhoneNumberType

# The United States and its territories share country code +1 with other countries.
US_REGIONS = {"US", "PR", "VI", "GU", "AS", "MP"}
SMS_TYPES = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
# Punctuation people write in phone numbers; anything else (letters, extensions, "*", "#",
# control characters) is refused rather than guessed at.
SEPARATORS = set(" \t()-.")
MAX_LENGTH = 30
EXAMPLE = "like (202) 555-0143"

INTERNATIONAL = ("Only US phone numbers are accepted; international numbers cannot receive "
                 "passcodes.")
CANADIAN = ("Only US phone numbers are accepted; Canadian and other international numbers "
            "cannot receive passcodes.")


class PhoneNumberError(ValueError):
    """The number cannot receive our text messages; the message says why."""


def _national_digits(text: str) -> str:
    """The ten national digits of ``text``, or raise with what is wrong with it."""
    if not text:
        raise PhoneNumberError("Enter your mobile phone number.")
    if len(text) > MAX_LENGTH:
        raise PhoneNumberError(f"That is too long for a phone number. Enter a 10-digit US "
                               f"number, {EXAMPLE}.")
    plus = text.startswith("+")
    body = text[1:] if plus else text
    if any(ch.isalpha() for ch in body):
        raise PhoneNumberError(f"A phone number has digits only; letters and extensions are "
                               f"not accepted. Enter a 10-digit US number, {EXAMPLE}.")
    if any(not (ch.isdecimal() or ch in SEPARATORS) for ch in body):
        raise PhoneNumberError(f"Use only digits, spaces, dashes, dots, parentheses and a "
                               f"leading + in a phone number, {EXAMPLE}.")
    digits = "".join(str(int(ch)) for ch in body if ch.isdecimal())
    if plus:
        if not digits.startswith("1"):
            raise PhoneNumberError(INTERNATIONAL)
        digits = digits[1:]
    elif len(digits) > 10 and digits.startswith(("011", "00")):
        # Dialled with an international access code.
        raise PhoneNumberError(INTERNATIONAL)
    elif len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) < 10:
        raise PhoneNumberError(f"This phone number is too short: a US number has 10 digits, "
                               f"{EXAMPLE}.")
    if len(digits) > 10:
        raise PhoneNumberError(f"This phone number is too long: a US number has 10 digits, "
                               f"{EXAMPLE}.")
    return digits


def _area_code_exists(area: str) -> bool:
    """Whether ``area`` is in use at all (some ordinary number in it is valid)."""
    return phonenumbers.is_valid_number(phonenumbers.parse(f"+1{area}2345678"))


def normalize_us_phone(text: str) -> str:
    """Return the E.164 form of a US mobile number, or raise :class:`PhoneNumberError`.

    Accepts ``(202) 555-0143``, ``202-555-0143``, ``2025550143``, ``+1 202 555 0143``…
    """
    digits = _national_digits((text or "").strip())
    area = digits[:3]
    if area[0] in "01":
        raise PhoneNumberError(f"{area} is not a valid US area code. Check the number.")
    number = phonenumbers.parse("+1" + digits)
    region = phonenumbers.region_code_for_number(number)
    if region == "CA":
        raise PhoneNumberError(CANADIAN)
    if region is not None and region not in US_REGIONS:
        raise PhoneNumberError(INTERNATIONAL)
    if not phonenumbers.is_valid_number(number):
        if region is None and not _area_code_exists(area):
            raise PhoneNumberError(f"{area} is not a valid US area code. Check the number.")
        raise PhoneNumberError("This is not a valid US phone number. Check the seven digits "
                               "after the area code.")
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
    """``newuser@example.com`` → ``n******@example.com``; a one-letter name is all hidden."""
    local, _, domain = (address or "").partition("@")
    if not domain:
        return "***"
    shown = local[:1] if len(local) > 1 else ""
    return shown + "*" * max(1, len(local) - len(shown)) + "@" + domain
