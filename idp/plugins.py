"""The plugin interface.

A plugin is an object with ``name``, ``default_config`` and ``init_app(app, registry)``.
Plugins are listed in ``IDP_PLUGINS`` (comma separated), each by the name of an entry point
of the ``idp.plugins`` group (how an installed package offers one) or by the import path of a
module whose ``plugin`` attribute is the plugin object. ``init_app`` receives a
:class:`PluginRegistry` on which it registers what it contributes::

    class MyPlugin:
        name = "example"
        default_config = {"IDP_EXAMPLE_GREETING": ("hello", str)}

        def init_app(self, app, registry):
            registry.add_blueprint(example_blueprint)
            registry.add_step(ExampleStep())
            registry.add_acr_level(AcrLevel("urn:example:acr:strong", rank=20, is_met=...))
            registry.add_cli_group(example_cli)
            registry.add_client_setting(ClientSetting("example_level", [level_option],
                                                      apply=copy_level))
            registry.add_claims(lambda user, scope: {"example_badge": user.username})
            registry.add_encrypted_column(ExampleSecret.value_encrypted)  # idp.crypto.encrypt
            registry.add_prune(lambda now, cutoff: {
                "example_secrets": delete(ExampleSecret).where(ExampleSecret.expires_at < cutoff)})

    plugin = MyPlugin()

A plugin imports only ``idp.plugin_api`` of the core. The core never imports a plugin by
name: it only walks ``IDP_PLUGINS``. A complete,
working example is ``tests/example_plugin.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import click
from flask import Blueprint, Flask

if TYPE_CHECKING:
    from idp.auth.acr import AcrLevel
    from idp.auth.pipeline import Step


class Plugin(Protocol):
    name: str
    default_config: dict[str, tuple[Any, type]]

    def init_app(self, app: Flask, registry: PluginRegistry) -> None: ...


@dataclass
class ClientSetting:
    """A per-client option a plugin adds to ``idp clients create/update/show``.

    ``options`` are click options; ``apply(settings, params)`` copies the parsed values
    into the client's ``settings`` dict (leaving it alone for options not given).
    """

    name: str
    options: list[click.Option]
    apply: Callable[[dict, dict], None]
    default: Any = None


@dataclass
class PluginRegistry:
    """What plugins contribute to the application."""

    plugins: list[Any] = field(default_factory=list)
    blueprints: list[Blueprint] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    acr_levels: list[AcrLevel] = field(default_factory=list)
    cli_groups: list[click.Command] = field(default_factory=list)
    client_settings: list[ClientSetting] = field(default_factory=list)
    claim_providers: list[Callable[[Any, str], dict]] = field(default_factory=list)
    encrypted_columns: list[Any] = field(default_factory=list)
    prune_statements: list[Callable[[Any, Any], dict]] = field(default_factory=list)

    def add_blueprint(self, blueprint: Blueprint) -> None:
        self.blueprints.append(blueprint)

    def add_step(self, step: Step) -> None:
        """Add a sign-in step; steps run in the order plugins add them, before Terms."""
        self.steps.append(step)

    def add_acr_level(self, level: AcrLevel) -> None:
        self.acr_levels.append(level)

    def add_cli_group(self, group: click.Command) -> None:
        self.cli_groups.append(group)

    def add_client_setting(self, setting: ClientSetting) -> None:
        self.client_settings.append(setting)

    def add_claims(self, provider: Callable[[Any, str], dict]) -> None:
        """``provider(user, scope)`` returns extra userinfo claims for the granted
        ``scope`` (a space-separated string); the ID token carries only ``sub``."""
        self.claim_providers.append(provider)

    def add_encrypted_column(self, column: Any) -> None:
        """Declare a model column holding values made by ``idp.crypto.encrypt`` (e.g.
        ``MfaFactor.secret_encrypted``): ``idp keys reencrypt`` moves them to the current
        ``IDP_ENCRYPTION_KEY``. The model needs a single-column primary key."""
        if not any(known is column for known in self.encrypted_columns):
            self.encrypted_columns.append(column)

    def add_prune(self, statements: Callable[[Any, Any], dict]) -> None:
        """``statements(now, cutoff)`` returns ``{name: DELETE statement}`` for the plugin's
        rows that can no longer be used (``cutoff`` is ``now`` less the grace period the
        core keeps its own rows for): ``idp maintenance prune`` runs them with its own."""
        self.prune_statements.append(statements)


#: The entry-point group where installed packages declare their plugins, e.g. in
#: pyproject.toml ``[project.entry-points."idp.plugins"] example = "example_idp:plugin"``.
ENTRY_POINT_GROUP = "idp.plugins"


def _entry_point(name: str):
    from importlib.metadata import entry_points

    return next(iter(entry_points(group=ENTRY_POINT_GROUP, name=name)), None)


def load_plugins(spec: str) -> list[Any]:
    """Load every plugin named in ``IDP_PLUGINS``: the name of an entry point of the
    ``idp.plugins`` group (``example``), or the import path of a module whose ``plugin``
    attribute is the plugin (``example_idp.plugin``). A wrong name stops the start with a message
    that says which one."""
    from idp.config import ConfigError

    plugins = []
    for path in dict.fromkeys(p.strip() for p in spec.split(",") if p.strip()):
        entry_point = _entry_point(path) if "." not in path else None
        try:
            if entry_point is not None:
                plugin = entry_point.load()
            else:
                plugin = getattr(importlib.import_module(path), "plugin", None)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"IDP_PLUGINS names {path!r}, which cannot be imported: "
                              f"{exc}.") from exc
        if plugin is None or not callable(getattr(plugin, "init_app", None)):
            raise ConfigError(f"IDP_PLUGINS names {path!r}, which has no `plugin` object "
                              "with an init_app(app, registry) method.")
        if any(known is plugin for known in plugins):
            continue  # the same plugin named twice (by its entry point and its module)
        plugins.append(plugin)
    return plugins


def get_registry(app: Flask) -> PluginRegistry:
    return app.extensions["idp.registry"]
