"""No log line holds a secret: every test's log records are scanned for the secrets used so far.

A pytest plugin (``tests/conftest.py`` loads it). While the tests run it learns every secret
value that goes through the IdP in this process:

- passwords, as argon2 hashes or checks them (the wrong ones people type included);
- passcodes (``secrets.randbelow(1_000_000)``), link, device, session and pending-request
  tokens and generated passwords (``secrets.token_urlsafe`` called by the IdP's code), TOTP
  secrets and recovery codes;
- what the token endpoint and the authorization endpoint hand out: codes, access, refresh and
  ID tokens, client secrets (seen in every response of the IdP, JSON or redirect);
- phone numbers in full, as the IdP normalises them (E.164 and the ten national digits).

Every log record of any logger (message, arguments, exception and traceback, and the extra
fields a formatter would print) is checked against them as it is emitted; a record that holds
one fails the test during which it was logged, naming the kind of secret (never the value).
Logs of servers run as subprocesses are checked with :func:`scan_file`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

# Words in a log line: runs of the characters secrets are made of.
_WORD = re.compile(r"[A-Za-z0-9_\-+.~]+")
# Shorter values (other than six-digit passcodes) say too little to be told from chance.
_MIN_LENGTH = 8
_RESPONSE_SECRETS = ("code", "access_token", "refresh_token", "id_token", "client_secret",
                     "logout_token", "registration_access_token")
_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class SecretBook:
    """The secrets seen so far, by kind, and the records that leaked one."""

    def __init__(self):
        self._lock = threading.Lock()
        self.words: dict[str, str] = {}  # value -> kind, for values that are one word
        self.phrases: dict[str, str] = {}  # values with spaces or odd characters
        self.leaks: list[str] = []

    def add(self, value, kind: str) -> None:
        if not isinstance(value, str):
            return
        value = value.strip()
        if not (len(value) >= _MIN_LENGTH or (kind == "passcode" and len(value) == 6)):
            return
        with self._lock:
            if _WORD.fullmatch(value):
                self.words.setdefault(value, kind)
            else:
                self.phrases.setdefault(value, kind)
            if kind == "phone number" and value.startswith("+1") and len(value) == 12:
                self.words.setdefault(value[2:], kind)

    def find(self, text: str) -> list[str]:
        """The kinds of the secrets ``text`` holds."""
        found = [self.words[w] for w in _WORD.findall(text) if w in self.words]
        for word in _WORD.findall(text):  # a token glued to a dot or a dash, e.g. "…abc."
            stripped = word.strip(".-~")
            if stripped != word and stripped in self.words:
                found.append(self.words[stripped])
        found += [kind for phrase, kind in list(self.phrases.items()) if phrase in text]
        return sorted(set(found))


BOOK = SecretBook()


def record_text(record: logging.LogRecord) -> str:
    """Everything of ``record`` a handler could write."""
    parts = [str(record.msg)]
    try:
        parts.append(record.getMessage())
    except Exception:  # noqa: BLE001 - a broken record still has its parts
        parts.append(repr(record.args))
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    for name, value in vars(record).items():
        if name not in _STANDARD_RECORD_FIELDS:
            parts.append(f"{name}={value!r}")
    return "\n".join(parts)


class AuditHandler(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.current_test = "-"

    def emit(self, record: logging.LogRecord) -> None:
        kinds = BOOK.find(record_text(record))
        if kinds:
            BOOK.leaks.append(f"{self.current_test}: {record.levelname} record of "
                              f"{record.name!r} holds: {', '.join(kinds)}")


HANDLER = AuditHandler()


def scan_file(path: Path, extra: dict[str, str] | None = None) -> list[str]:
    """The lines of a log file (a server run as a subprocess) that hold a known secret or
    one of ``extra`` (value -> kind): "<file> line N: <kinds>"."""
    book = BOOK
    if extra:
        book = SecretBook()
        book.words.update(BOOK.words)
        book.phrases.update(BOOK.phrases)
        for value, kind in extra.items():
            book.add(value, kind)
    found = []
    text = path.read_text(errors="replace") if path.exists() else ""
    for number, line in enumerate(text.splitlines(), 1):
        kinds = book.find(line)
        if kinds:
            found.append(f"{path.name} line {number}: {', '.join(kinds)}")
    return found


# --- learning the secrets -------------------------------------------------------------------


def _called_from_the_idp(depth: int = 2) -> bool:
    module = sys._getframe(depth).f_globals.get("__name__", "")
    return module.startswith(("idp", "plugins"))


def _wrap_secrets_module() -> None:
    token_urlsafe, randbelow = secrets.token_urlsafe, secrets.randbelow

    def recorded_token_urlsafe(nbytes=None):
        value = token_urlsafe(nbytes)
        if _called_from_the_idp():
            BOOK.add(value, "token")
        return value

    def recorded_randbelow(exclusive_upper_bound):
        value = randbelow(exclusive_upper_bound)
        if exclusive_upper_bound == 1_000_000 and _called_from_the_idp():
            BOOK.add(f"{value:06d}", "passcode")
        return value

    secrets.token_urlsafe = recorded_token_urlsafe
    secrets.randbelow = recorded_randbelow


def _wrap_passwords() -> None:
    from argon2 import PasswordHasher

    hash_, verify = PasswordHasher.hash, PasswordHasher.verify

    def recorded_hash(self, password, *args, **kwargs):
        BOOK.add(password if isinstance(password, str) else None, "password")
        return hash_(self, password, *args, **kwargs)

    def recorded_verify(self, stored, password, *args, **kwargs):
        BOOK.add(password if isinstance(password, str) else None, "password")
        return verify(self, stored, password, *args, **kwargs)

    PasswordHasher.hash, PasswordHasher.verify = recorded_hash, recorded_verify


def _wrap_factor_secrets() -> None:
    import phonenumbers
    import pyotp

    random_base32, format_number = pyotp.random_base32, phonenumbers.format_number

    def recorded_random_base32(*args, **kwargs):
        value = random_base32(*args, **kwargs)
        BOOK.add(value, "TOTP secret")
        return value

    def recorded_format_number(number, number_format):
        value = format_number(number, number_format)
        if number_format == phonenumbers.PhoneNumberFormat.E164:
            BOOK.add(value, "phone number")
        return value

    pyotp.random_base32 = recorded_random_base32
    phonenumbers.format_number = recorded_format_number
    try:
        from plugins.mfa.factors.recovery import RecoveryFactor as Recovery
    except ImportError:
        return
    generate = Recovery.generate

    def recorded_generate(user_id):
        codes = generate(user_id)
        for code in codes:
            BOOK.add(code, "recovery code")
            BOOK.add(code.replace("-", ""), "recovery code")
        return codes

    Recovery.generate = staticmethod(recorded_generate)


def _learn_from_response(sender, response, **_extra) -> None:
    """What the IdP hands out: JSON bodies and redirect (or form_post) parameters."""
    location = response.headers.get("Location")
    if location:
        for name, value in parse_qsl(urlsplit(location).query + "&"
                                     + urlsplit(location).fragment):
            if name in _RESPONSE_SECRETS:
                BOOK.add(value, name.replace("_", " "))
    if response.mimetype == "application/json" and not response.direct_passthrough:
        try:
            data = json.loads(response.get_data())
        except ValueError:
            return
        if isinstance(data, dict):
            for name in _RESPONSE_SECRETS:
                BOOK.add(data.get(name), name.replace("_", " "))


# --- the plugin -------------------------------------------------------------------------------


def pytest_configure(config):
    _wrap_secrets_module()
    _wrap_passwords()
    _wrap_factor_secrets()
    from flask import request_finished

    request_finished.connect(_learn_from_response, weak=False)
    logging.getLogger().addHandler(HANDLER)


@pytest.fixture(autouse=True)
def no_secret_in_the_logs(request):
    """Fails the test during which a log record held a secret."""
    HANDLER.current_test = request.node.nodeid
    before = len(BOOK.leaks)
    yield
    leaks = BOOK.leaks[before:]
    HANDLER.current_test = "-"
    if leaks:
        pytest.fail("secrets in log records:\n" + "\n".join(leaks), pytrace=False)
