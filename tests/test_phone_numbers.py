"""US numbers only: the usual spellings become E.164; everything else is refused, and says why.

Masks show enough to recognise a destination and no more.
"""

import pytest

from idp.delivery import PhoneNumberError, mask_email, mask_phone, normalize_us_phone


@pytest.mark.parametrize("spelling", [
    "(202) 555-0143",
    "202-555-0143",
    "2025550143",
    "202.555.0143",
    "+1 202 555 0143",
    "1-202-555-0143",
    "+12025550143",
    "+1 (202) 555-0143",
    "12025550143",
    "  202 555 0143  ",
])
def test_usual_spellings_of_a_us_number_normalise_to_e164(spelling):
    assert normalize_us_phone(spelling) == "+12025550143"


def test_us_territories_count_as_us_numbers():
    assert normalize_us_phone("(787) 555-0143") == "+17875550143"  # Puerto Rico
    assert normalize_us_phone("671-555-0143") == "+16715550143"  # Guam


def refusal(text) -> str:
    with pytest.raises(PhoneNumberError) as caught:
        normalize_us_phone(text)
    return str(caught.value)


@pytest.mark.parametrize("number", [
    "+44 20 7946 0958",  # United Kingdom, London
    "+44 7911 123456",  # United Kingdom, mobile
    "+33 6 12 34 56 78",  # France, mobile
    "+52 55 1234 5678",  # Mexico
    "011 44 20 7946 0958",  # dialled from the US with the international access code
    "+1 876 555 0143",  # Jamaica shares +1
    "+1 242 555 0143",  # the Bahamas share +1
])
def test_international_numbers_are_refused_as_international(number):
    message = refusal(number)
    assert "Only US phone numbers are accepted" in message
    assert "international numbers cannot receive passcodes" in message


@pytest.mark.parametrize("number", ["+1 416 555 0143", "416-555-0143", "(604) 555-0143"])
def test_canadian_numbers_are_refused_although_they_share_plus_one(number):
    message = refusal(number)
    assert "Only US phone numbers are accepted" in message
    assert "Canadian" in message


@pytest.mark.parametrize("number", [
    "800-555-0143", "(888) 555-0143", "877 555 0143", "+1 866 555 0143", "1-833-555-0143",
])
def test_toll_free_numbers_are_refused(number):
    assert refusal(number) == ("Toll-free numbers cannot receive passcodes. Enter a mobile "
                               "number.")


def test_premium_rate_numbers_are_refused():
    assert refusal("900-555-0143") == ("Premium-rate numbers cannot receive passcodes. Enter a "
                                       "mobile number.")


@pytest.mark.parametrize(("number", "area"), [
    ("011-555-0143", "011"),  # an area code never starts with 0 ...
    ("(102) 555-0143", "102"),  # ... or 1
    ("311-555-0143", "311"),  # N11 codes are service codes
    ("911-555-0143", "911"),
    ("555-555-0143", "555"),  # 555 is an exchange, never an area code
    ("976-555-0143", "976"),  # unassigned
])
def test_invalid_area_codes_are_named_in_the_refusal(number, area):
    assert refusal(number) == f"{area} is not a valid US area code. Check the number."


def test_a_local_number_starting_with_0_or_1_is_refused_as_invalid():
    for number in ("202-055-0143", "202-155-0143"):
        assert refusal(number) == ("This is not a valid US phone number. Check the seven "
                                   "digits after the area code.")


@pytest.mark.parametrize("number", ["202-555-014", "555-0143", "+1 202 555 014", "202"])
def test_too_short_numbers_say_a_us_number_has_ten_digits(number):
    assert refusal(number).startswith("This phone number is too short: a US number has 10 "
                                      "digits")


@pytest.mark.parametrize("number", ["202-555-01433", "+1 202 555 01433", "22025550143",
                                    "1 202 555 0143 1"])
def test_too_long_numbers_say_a_us_number_has_ten_digits(number):
    assert refusal(number).startswith("This phone number is too long: a US number has 10 "
                                      "digits")


@pytest.mark.parametrize("text", ["202-CALL-NOW", "202-555-01a3", "abc", "202 555 0143 ext 5",
                                  "(202) 555-0143 x12", "tel:+1-202-555-0143"])
def test_letters_are_refused_not_read_as_a_keypad(text):
    assert refusal(text).startswith("A phone number has digits only; letters and extensions "
                                    "are not accepted.")


@pytest.mark.parametrize("text", ["*202 555 0143", "202#555#0143", "(202) 555-0143\x00",
                                  "++12025550143", "202/555/0143"])
def test_other_symbols_are_refused_with_the_characters_allowed(text):
    assert refusal(text).startswith("Use only digits, spaces, dashes, dots, parentheses and a "
                                    "leading + in a phone number")


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_an_empty_number_asks_for_one(empty):
    assert refusal(empty) == "Enter your mobile phone number."


@pytest.mark.parametrize("text", ["2" * 31, "2025550143" * 10_000, "+1 " + "9" * 500])
def test_absurdly_long_input_is_refused_as_too_long_without_being_parsed(text):
    assert refusal(text).startswith("That is too long for a phone number.")


def test_every_refusal_shows_an_example_or_says_what_to_enter():
    for text in ("202-CALL-NOW", "202-555-014", "202-555-01433", "2" * 40, "*2025550143"):
        assert "(202) 555-0143" in refusal(text), text


def test_mask_phone_shows_only_the_last_four_digits():
    assert mask_phone("+12025550143") == "***-***-0143"
    assert "202" not in mask_phone("+12025550143")


def test_mask_email_hides_the_local_part_and_keeps_the_domain():
    masked = mask_email("newuser@example.com")
    assert masked.endswith("@example.com")
    assert "newuser" not in masked and "ewuser" not in masked
    assert masked == "n******@example.com"


def test_mask_email_hides_a_one_letter_local_part_entirely():
    assert mask_email("a@example.com") == "*@example.com"


def test_mask_email_of_something_without_a_domain_shows_nothing():
    assert mask_email("not-an-address") == "***"
    assert mask_email("") == "***"
