"""The log audit of the test run (``tests/log_audit.py``) knows the secrets the IdP handed out
and flags a log record that holds one: these tests prove it would fail a test that leaked."""

from __future__ import annotations

import logging

from tests.conftest import PASSWORD
from tests.log_audit import BOOK, HANDLER, record_text


def leaks_of(message: str, *args, exc: BaseException | None = None) -> list[str]:
    """What the audit reports for one record, taken back so this test itself passes."""
    before = len(BOOK.leaks)
    record = logging.makeLogRecord({"name": "idp.example", "levelname": "INFO",
                                    "msg": message, "args": args or None})
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    HANDLER.emit(record)
    found = BOOK.leaks[before:]
    del BOOK.leaks[before:]
    return found


def test_tokens_and_codes_the_idp_hands_out_are_flagged_in_a_log_record(oidc, rp, alice):
    row, secret = rp
    params = oidc.sign_in(row)
    tokens = oidc.token(row, secret, params["code"]).get_json()

    assert leaks_of("exchanged %s", params["code"]) != []
    assert "holds: " in leaks_of("bearer %s.", tokens["access_token"])[0]
    assert leaks_of("refresh with %s", tokens.get("refresh_token") or tokens["access_token"])
    assert leaks_of("id token: " + tokens["id_token"]) != []
    assert leaks_of("the password was %r", PASSWORD) != []
    assert leaks_of("nothing secret for client %s", row.client_id) == []


def test_a_secret_in_a_traceback_or_an_extra_field_is_flagged(oidc, rp, alice):
    row, secret = rp
    code = oidc.sign_in(row)["code"]
    try:
        raise ValueError(f"bad code {code}")
    except ValueError as exc:
        assert leaks_of("token exchange failed", exc=exc) != []
    record = logging.makeLogRecord({"msg": "sent", "destination": code})
    assert "destination=" in record_text(record)


def test_full_phone_numbers_are_flagged_in_both_spellings(app):
    from idp.delivery.phone import normalize_us_phone

    e164 = normalize_us_phone("(202) 555-0143")
    assert leaks_of("texted %s", e164) != []
    assert leaks_of("texted 2025550143") != []
    assert leaks_of("texted ***-***-0143") == []
