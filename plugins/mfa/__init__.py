"""The multifactor-authentication plugin.

It plugs into the sign-in pipeline through ``idp.plugins``; switch it off by leaving it out
of ``IDP_PLUGINS``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.plugins import PluginRegistry


class MfaPlugin:
    name = "mfa"
    default_config: dict[str, tuple[Any, type]] = {
        "IDP_MFA_REQUIRED_FROM": ("2025-03-06", str),
    }

    def init_app(self, app: Flask, registry: PluginRegistry) -> None:
        app.extensions["idp.mfa"] = self


plugin = MfaPlugin()
