"""Signals the core sends, so plugins can react without the core knowing them.

``password_changed(app, user=...)``: a user's password was changed (the MFA plugin forgets
that user's remembered devices).

``sign_in_progress_discarded(app, pending=...)``: a pending sign-in's
progress was discarded because another user, session or authentication event took it over
(the MFA plugin revokes the codes it sent for it).
"""

from blinker import Namespace

_signals = Namespace()

password_changed = _signals.signal("password-changed")
sign_in_progress_discarded = _signals.signal("sign-in-progress-discarded")
