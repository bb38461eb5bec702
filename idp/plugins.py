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

A plugin with tables of its own declares its Alembic revisions with an optional
``migrations`` attribute, the path of their folder (e.g. ``Path(__file__).parent /
"migrations" / "versions"``). They form the plugin's own branch: its first revision has
``down_revision = None``, ``branch_labels = ("<name>",)`` and ``depends_on`` the core revision
that makes the tables it refers to (``0001_core`` for ``users``). Alembic is given the folders
of every installed plugin (:func:`installed_plugins`), enabled or not, so that it finds every
revision a database has recorded; ``idp db upgrade`` migrates the heads of the core's branch
and of the enabled plugins' branches only, so a plugin that is off adds no table, and one
switched off keeps its tables as they are. ``idp db downgrade <name>@base`` drops only the
plugin's. A core migration never creates a plugin's table (``tests/test_plugin_interface.py``).

A plugin imports only ``idp.plugin_api`` of the core. The core never imports a plugin by
name: it only walks ``IDP_PLUGINS``. A complete,
working example is ``tests/example_plugin.py``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import click
from flask import Blueprint, Flask

if TYPE_CHECKING:
    from idp.auth.acr import AcrLevel
    from idp.signin.pipeline import Step

log = logging.getLogger(__name__)


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
class AccountSection:
    """A section a plugin adds to the account page (``/account``), after Password.

    ``render(user, session)`` returns its HTML (a rendered template, whose forms post to the
    plugin's own routes); ``anchor`` is the id of its heading, where the page returns after a
    change made in it."""

    title: str
    anchor: str
    render: Callable[[Any, Any], str]


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
    account_sections: list[AccountSection] = field(default_factory=list)
    account_guards: list[Callable[[Any, Any], bool]] = field(default_factory=list)
    account_fresh_checks: list[Callable[[Any, int], bool]] = field(default_factory=list)
    account_intents: set[str] = field(default_factory=set)
    event_phrases: dict[str, str] = field(default_factory=dict)

    @property
    def migration_folders(self) -> list[str]:
        """The Alembic version folders of the enabled plugins that declare one
        (``migrations``): the branches ``idp db upgrade`` migrates."""
        return migration_folders(self.plugins)

    def installed_migration_folders(self) -> list[str]:
        """The version folders of every installed plugin, enabled or not (the enabled ones
        first): those Alembic reads, so that the revisions of a plugin switched off after
        its branch was migrated are still found."""
        return migration_folders(installed_plugins(self.plugins))

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

    def add_account_section(self, section: AccountSection) -> None:
        self.account_sections.append(section)

    def add_account_guard(self, guard: Callable[[Any, Any], bool]) -> None:
        """``guard(session, client)``: whether the session is signed in well enough for the
        account page (the MFA plugin: a second factor or a remembered device, where the
        account has MFA or must have it). When a guard says no, the page starts a sign-in
        for itself, which the pipeline's steps complete."""
        self.account_guards.append(guard)

    def add_account_fresh_check(self, check: Callable[[Any, int], bool]) -> None:
        """``check(session, since)``: whether the session was checked recently enough (since
        the epoch ``since``) for the account page to change a security setting. The sign-in
        that makes it fresh carries ``ctx.step_state("core")["fresh"]`` for steps to read."""
        self.account_fresh_checks.append(check)

    def add_account_intent(self, name: str) -> None:
        """A reason a plugin may start the account page's sign-in for (``/account/sign-in
        ?intent=<name>``), for steps to read in ``ctx.step_state("core")["intent"]``: say,
        to change the MFA methods after passing the challenge again."""
        self.account_intents.add(name)

    def add_event_phrases(self, phrases: dict[str, str]) -> None:
        """Plain words for the plugin's audit events, shown to the user under Recent
        Security Events (events without words are not shown)."""
        self.event_phrases.update(phrases)

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


def installed_plugins(enabled: list[Any]) -> list[Any]:
    """The installed plugins: the ``enabled`` ones (those ``IDP_PLUGINS`` names), then those
    the entry points of the ``idp.plugins`` group offer. An entry point whose plugin cannot
    be imported is skipped with a warning (it is not enabled: nothing else needs it)."""
    from importlib.metadata import entry_points

    plugins = list(enabled)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = entry_point.load()
        except Exception as exc:  # a third party's package: any error of its import
            log.warning("The plugin of the entry point %r (%s) cannot be imported, its "
                        "migrations are left out: %s", entry_point.name, entry_point.value, exc)
            continue
        if not any(known is plugin for known in plugins):
            plugins.append(plugin)
    return plugins


def migration_folders(plugins: list[Any]) -> list[str]:
    """The Alembic version folders (``migrations``) of those ``plugins`` that declare one,
    each once."""
    folders: dict[str, str] = {}
    for plugin in plugins:
        if folder := getattr(plugin, "migrations", None):
            folders.setdefault(os.path.realpath(folder), str(folder))
    return list(folders.values())


def get_registry(app: Flask) -> PluginRegistry:
    return app.extensions["idp.registry"]
