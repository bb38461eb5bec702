"""Claims about a user, by scope (OpenID Connect Core §5.4)."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import scope_to_list
from authlib.oidc.core import UserInfo
from flask import current_app

from idp.timeutil import epoch


def user_claims(user, scope: str, for_id_token: bool = False) -> UserInfo:
    """Claims for ``user`` allowed by ``scope``.

    The ID token carries only ``sub``: the profile claims are served by the userinfo
    endpoint, where they are always current.
    """
    info = UserInfo(sub=user.sub)
    if for_id_token:
        return info
    scopes = set(scope_to_list(scope or ""))
    if "profile" in scopes:
        info["preferred_username"] = user.username
        if user.name:
            info["name"] = user.name
        info["updated_at"] = epoch(user.created_at)
    if "email" in scopes:
        info["email"] = user.email
        info["email_verified"] = bool(user.email_verified)
    if "phone" in scopes and user.phone:
        info["phone_number"] = user.phone
        info["phone_number_verified"] = False
    for provider in current_app.extensions["idp.registry"].claim_providers:
        info.update(provider(user, scope) or {})
    return info
