"""The sign-in context: what a step may look at, and whose progress a pending request holds.

A pending authorization request keeps the progress of its sign-in in ``state``: what the
request asked (``core``), whose progress it is (``owner``: the user, the SSO session and its
authentication event) and one entry per step. :func:`load_context` binds that progress to
the session signed in now, discarding it when the owner changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from authlib.oauth2.rfc6749 import scope_to_list
from flask import current_app

from idp import audit
from idp.extensions import db
from idp.models import Client, PendingAuthorization, SsoSession, User, find_client
from idp.signals import sign_in_progress_discarded

#: The pending request's own keys in ``state``: what the request asked (``core``) and whose
#: progress the rest is (``owner``). Every other key is a step's progress.
REQUEST_STATE = "core"
OWNER_STATE = "owner"


@dataclass
class SignInContext:
    """What a step may look at to decide whether it is needed."""

    pending: PendingAuthorization
    client: Client
    session: SsoSession | None
    extras: dict[str, Any] = field(default_factory=dict)
    #: Loading this context discarded progress made by another user, session or event: a
    #: form posted now was filled in for them, and must not act.
    progress_discarded: bool = False
    #: On a step's page: the step it serves (the current one) and why it is needed.
    step: Any = None
    reason: str | None = None

    @property
    def params(self) -> dict[str, str]:
        return self.pending.params

    @cached_property
    def user(self) -> User | None:
        if self.session is not None:
            return self.session.user
        return None

    @property
    def prompts(self) -> set[str]:
        return set((self.params.get("prompt") or "").split())

    @property
    def scopes(self) -> list[str]:
        return scope_to_list(self.params.get("scope") or "") or []

    @property
    def max_age(self) -> int | None:
        value = self.params.get("max_age")
        return int(value) if value not in (None, "") else None

    @property
    def logged_in_this_interaction(self) -> bool:
        return self.pending.login_at is not None

    @cached_property
    def acr_request(self) -> AcrRequest:
        return AcrRequest.from_params(self.params)

    def step_state(self, step_name: str) -> dict:
        """A copy of the dict a step keeps in the pending request; save with ``save_state``."""
        return dict((self.pending.state or {}).get(step_name, {}))

    def save_state(self, step_name: str, value: dict) -> None:
        state = dict(self.pending.state or {})
        state[step_name] = value
        self.pending.state = state


@dataclass
class AcrRequest:
    """The ``acr`` values a client asked for: voluntary (``acr_values``) or essential
    (the ``claims`` parameter)."""

    voluntary: list[str]
    essential: list[str]

    @property
    def all(self) -> list[str]:
        return self.essential + [v for v in self.voluntary if v not in self.essential]

    @classmethod
    def from_params(cls, params: dict) -> AcrRequest:
        voluntary = (params.get("acr_values") or "").split()
        essential: list[str] = []
        claims = params.get("claims")
        if claims:
            acr = _acr_claim_request(json.loads(claims))
            values = acr.get("values") or ([acr["value"]] if "value" in acr else [])
            if acr.get("essential"):
                essential = list(values)
            else:
                voluntary = voluntary + [v for v in values if v not in voluntary]
        return cls(voluntary=voluntary, essential=essential)


def _acr_claim_request(claims) -> dict:
    """The ``acr`` member of the ``claims`` parameter's ``id_token`` object, checked
    (OIDC Core 5.5.1); raises ``ValueError`` when it is malformed."""
    if not isinstance(claims, dict):
        raise ValueError("claims must be a JSON object")
    id_token = claims.get("id_token")
    if id_token is None:
        return {}
    if not isinstance(id_token, dict):
        raise ValueError("claims.id_token must be an object")
    acr = id_token.get("acr")
    if acr is None:
        return {}
    if not isinstance(acr, dict):
        raise ValueError("claims.id_token.acr must be null or an object")
    if not isinstance(acr.get("essential", False), bool):
        raise ValueError("essential must be a boolean")
    if "value" in acr and not isinstance(acr["value"], str):
        raise ValueError("value must be a string")
    values = acr.get("values")
    if values is not None and (
        not isinstance(values, list) or not all(isinstance(v, str) for v in values)
    ):
        raise ValueError("values must be an array of strings")
    return acr


def progress_owner(session: SsoSession | None) -> dict | None:
    """Whose progress a pending request holds: the user, the SSO session and its current
    authentication event (which a password check starts; see ``record_authentication``)."""
    if session is None:
        return None
    if session.sid is None:
        db.session.flush()  # a session created in this request gets its sid
    event = next((e.get("id") for e in session.events or [] if e.get("method") == "pwd"), None)
    return {"user": session.user_id, "sid": session.sid,
            "event": event or session.auth_time.isoformat(timespec="microseconds")}


def bind_progress(pending: PendingAuthorization, session: SsoSession | None) -> bool:
    """Make the pending request's progress belong to ``session``.

    Everything a sign-in has proven (steps passed, factors checked, consent, Modify asked
    for, codes sent) was proven by one user in one authentication event of one SSO session.
    When the browser's session is no longer that one (another user signed in, on this
    request or in another tab; the user signed out; the password was checked again), all
    of it is discarded and the pipeline starts over for whoever is signed in now. Returns
    whether anything was discarded.
    """
    state = pending.state or {}
    owner = progress_owner(session)
    if state.get(OWNER_STATE) == owner:
        return False
    previous = state.get(OWNER_STATE)
    had_progress = (previous is not None or pending.user_id is not None
                    or any(key not in (REQUEST_STATE, OWNER_STATE) for key in state))
    pending.state = {REQUEST_STATE: dict(state.get(REQUEST_STATE) or {}), OWNER_STATE: owner}
    pending.user_id, pending.login_at = None, None
    if had_progress:
        audit.record("sign_in_progress_discarded",
                     user_id=previous.get("user") if previous else None,
                     client_id=pending.client_id,
                     reason=_discard_reason(previous, owner))
        sign_in_progress_discarded.send(current_app._get_current_object(), pending=pending)
    return had_progress


def _discard_reason(previous: dict | None, owner: dict | None) -> str:
    if owner is None:
        return "signed_out"
    if previous is None or previous.get("user") != owner["user"]:
        return "other_user"
    if previous.get("sid") != owner["sid"]:
        return "other_session"
    return "new_authentication_event"


def load_context(pending: PendingAuthorization, session: SsoSession | None) -> SignInContext:
    """The sign-in context of a pending request, its progress bound to ``session``."""
    discarded = bind_progress(pending, session)
    return SignInContext(pending=pending, client=find_client(pending.client_id),
                         session=session, progress_discarded=discarded)
