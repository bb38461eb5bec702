"""The core's models. Plugins define their own models in their own modules."""

from idp.models.account import AccountLink
from idp.models.audit import AuditEvent
from idp.models.client import AUTH_METHODS, GRANT_TYPES, Client, find_client
from idp.models.consent import Consent, TermsAcceptance
from idp.models.delivery import OutboxMessage, RateCounter
from idp.models.keys import SigningKey
from idp.models.oauth import AuthorizationCode, Token, UsedClientAssertion
from idp.models.sessions import PendingAuthorization, SessionClient, SsoSession
from idp.models.user import User

__all__ = [
    "AUTH_METHODS",
    "AccountLink",
    "GRANT_TYPES",
    "AuditEvent",
    "AuthorizationCode",
    "Client",
    "Consent",
    "OutboxMessage",
    "PendingAuthorization",
    "RateCounter",
    "SessionClient",
    "SigningKey",
    "SsoSession",
    "TermsAcceptance",
    "Token",
    "UsedClientAssertion",
    "User",
    "find_client",
]
