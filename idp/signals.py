"""Signals the core sends, so plugins can react without the core knowing them.

``password_changed(app, user=...)``: a user's password was changed (the MFA plugin forgets
that user's remembered devices).

``account_email_verified(app, user=...)``: the account email was verified by its emailed link
(the MFA plugin takes it as the verified MFA email of an account that has none yet).

``notice_addresses(app, user=...)``: receivers return the other addresses (a list) to which
security notices about the account go besides the account email (the MFA email).

``sign_in_progress_discarded(app, pending=...)``: a pending sign-in's
progress was discarded because another user, session or authentication event took it over
(the MFA plugin revokes the codes it sent for it).
"""

from blinker import Namespace

_signals = Namespace()

password_changed = _signals.signal("password-changed")
account_email_verified = _signals.signal("account-email-verified")
notice_addresses = _signals.signal("notice-addresses")
sign_in_progress_discarded = _signals.signal("sign-in-progress-discarded")
