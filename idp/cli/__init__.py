"""The ``idp`` command's admin groups, one module each (clients, users, keys, and the
operators' demo, delivery and maintenance); the program itself is ``idp.console``."""

from __future__ import annotations

from idp.cli.clients import build_clients_group, client_to_dict
from idp.cli.database import database_group
from idp.cli.keys import keys_group
from idp.cli.operations import delivery, demo, maintenance
from idp.cli.users import users
from idp.plugins import PluginRegistry

__all__ = ["client_to_dict", "init_app"]


def init_app(app, registry: PluginRegistry) -> None:
    app.cli.add_command(database_group())  # in place of Flask-Migrate's
    app.cli.add_command(build_clients_group(registry))
    app.cli.add_command(users)
    app.cli.add_command(keys_group)
    app.cli.add_command(demo)
    app.cli.add_command(maintenance)
    app.cli.add_command(delivery)
    for group in registry.cli_groups:
        app.cli.add_command(group)
