"""What a new password must be (NIST SP 800-63B §3.1.1.2): long enough, not common or easily
guessed, not the user name; no composition rules, no expiry.

Commonness is judged by zxcvbn (frequency lists of leaked passwords, words, names, keyboard
patterns and dates), on the first ``CHECKED_LENGTH`` characters: a password longer than that
is long enough on its own. zxcvbn's lists take 14 MiB: they are loaded by the first check
of a new password, not by every worker at start (most never set one)."""

from __future__ import annotations

MIN_LENGTH = 8
ADVISED_LENGTH = 15
MAX_LENGTH = 256
CHECKED_LENGTH = 64

TOO_SHORT = f"Your password must be at least {MIN_LENGTH} characters long."
TOO_LONG = f"Your password can be at most {MAX_LENGTH} characters long."
HAS_USER_NAME = "Your password must not contain your user name."
TOO_COMMON = ("This password is too common or too easy to guess. Choose a longer one, for "
              "example a few unrelated words.")
MISMATCH = "The passwords you entered don't match."


def problem(password: str, username: str = "", other_inputs: tuple[str, ...] = ()) -> str | None:
    """Why ``password`` cannot be a new password for ``username``, or None when it can."""
    if len(password) < MIN_LENGTH:
        return TOO_SHORT
    if len(password) > MAX_LENGTH:
        return TOO_LONG
    if len(username) >= 3 and username.casefold() in password.casefold():
        return HAS_USER_NAME
    if len(password) >= CHECKED_LENGTH:
        return None
    from zxcvbn import zxcvbn

    inputs = [value for value in (username, *other_inputs) if value]
    result = zxcvbn(password, user_inputs=inputs)
    # Score 0-1: guessed within a million tries. Score 2 with a warning: a common pattern
    # ("similar to a commonly used password", a date, a sequence) barely disguised.
    if result["score"] < 2 or (result["score"] == 2 and result["feedback"]["warning"]):
        warning = result["feedback"]["warning"]
        return f"{TOO_COMMON} ({warning.rstrip('.')}.)" if warning else TOO_COMMON
    return None
