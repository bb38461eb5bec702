"""Everything a plugin may use of the core, in one place: a plugin imports from this module
and from no other of ``idp`` (``tests/test_plugin_interface.py`` holds that for
``plugins/``). What is here is kept stable; what is not may change without notice.

The groups, by what a plugin does with them:

- **Registering** (in ``init_app``): :class:`PluginRegistry`, :class:`ClientSetting`,
  :class:`AcrLevel`; :func:`check_range` and :class:`ConfigError` to refuse bad settings.
- **Sign-in steps**: :class:`Step` and :class:`SignInContext` (a step's ``needed(ctx)``,
  and ``arrive(ctx, reason)`` for what happens once as the sign-in reaches it); on a step's
  page :func:`load_interaction` with the step it ``serves`` (the sign-in with its progress
  bound to the user signed in now; unless that step is the current one, the browser goes
  back to the pipeline and the page does nothing), then :func:`continue_sign_in` when the
  step is done, or a redirect to :func:`resume_url`; :func:`record_authentication` records
  a method checked; :func:`current_session`, :func:`browser_id`; :data:`OWNER_STATE` and
  :func:`progress_owner` say whose progress a pending request holds.
- **Data**: ``db`` (Flask-SQLAlchemy; plugin models subclass ``db.Model``),
  :func:`dialect_insert`, :func:`insert_unless_present`; the core models a plugin reads
  (:class:`User`, :class:`Client`, :class:`PendingAuthorization`, :class:`SsoSession`).
- **Messages**: :func:`send_email`, :func:`send_sms`, :class:`DeliveryError`,
  :class:`ThrottledError`, :class:`PhoneNumberError`, :func:`normalize_us_phone`,
  :func:`mask_email`, :func:`mask_phone`.
- **Security and time**: ``audit`` (``audit.record``), :func:`digest`, :func:`keyed_digest`,
  :func:`random_token`, :func:`encrypt`, :func:`decrypt`, :func:`utcnow`, :func:`epoch`,
  :class:`InteractionError` (a page that explains a problem), :func:`issuer`,
  :func:`end_all_sessions_and_revoke`.
- **The account page** (``/account``): :class:`AccountSection` (``registry.add_account_section``;
  also ``add_account_guard``, ``add_account_fresh_check``, ``add_account_intent``,
  ``add_event_phrases``);
  :func:`account_session` (the session of a POST to a section's route, or the page's own
  sign-in), :func:`account_is_fresh`, :func:`account_sign_in` (a redirect that signs in
  again, for an intent or for a fresh check, and comes back to a section) and
  :func:`account_return` (back to a section); :func:`describe_browser` (a User-Agent
  header in words).
- **Signals**: ``password_changed``, ``sign_in_progress_discarded``,
  ``account_email_verified``, ``notice_addresses``.
"""

from __future__ import annotations

from idp import audit
from idp.accounts import end_all_sessions_and_revoke
from idp.auth.acr import AcrLevel
from idp.auth.sessions import browser_id, current_session, record_authentication
from idp.browsers import describe as describe_browser
from idp.config import ConfigError, check_range
from idp.crypto import decrypt, encrypt, keyed_digest
from idp.delivery import (
    DeliveryError,
    PhoneNumberError,
    ThrottledError,
    mask_email,
    mask_phone,
    normalize_us_phone,
    send_email,
    send_sms,
)
from idp.errors import InteractionError
from idp.extensions import db, dialect_insert, insert_unless_present
from idp.models import Client, PendingAuthorization, SsoSession, User
from idp.oauth.issuer import issuer
from idp.plugins import AccountSection, ClientSetting, PluginRegistry
from idp.security import digest, random_token
from idp.selfservice.account import (
    account_is_fresh,
    account_return,
    account_session,
    account_sign_in,
)
from idp.signals import (
    account_email_verified,
    notice_addresses,
    password_changed,
    sign_in_progress_discarded,
)
from idp.signin.context import OWNER_STATE, SignInContext, load_context, progress_owner
from idp.signin.interaction import continue_sign_in, load_interaction, load_pending, resume_url
from idp.signin.pipeline import Step
from idp.timeutil import epoch, utcnow

__all__ = [
    "OWNER_STATE", "AccountSection", "AcrLevel", "account_is_fresh", "account_return",
    "account_session", "account_sign_in", "describe_browser", "Client", "ClientSetting",
    "ConfigError", "DeliveryError",
    "InteractionError", "PendingAuthorization", "PhoneNumberError", "PluginRegistry",
    "SignInContext", "SsoSession", "Step", "ThrottledError", "User", "audit", "browser_id",
    "account_email_verified", "check_range", "continue_sign_in", "current_session", "db",
    "decrypt", "dialect_insert",
    "digest", "encrypt", "end_all_sessions_and_revoke", "epoch", "insert_unless_present",
    "issuer", "keyed_digest", "load_context", "load_interaction", "load_pending", "mask_email",
    "mask_phone", "normalize_us_phone", "notice_addresses", "password_changed", "progress_owner",
    "random_token",
    "record_authentication", "resume_url", "send_email", "send_sms",
    "sign_in_progress_discarded", "utcnow",
]
