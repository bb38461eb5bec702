"""Signals the core sends, so plugins can react without the core knowing them.

``password_changed(app, user=...)``: a user's password was changed (the MFA plugin forgets
that user's remembered devices).
"""

from blinker import Namespace

_signals = Namespace()

password_changed = _signals.signal("password-changed")
