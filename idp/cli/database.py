"""``idp db``: Flask-Migrate's commands, with the core's revisions and those of every installed
plugin known to Alembic, and ``upgrade``/``stamp`` going to the heads of the core and of the
enabled plugins."""

from __future__ import annotations

import copy
import os

import click
from alembic.script import ScriptDirectory
from flask import current_app, g
from flask.cli import with_appcontext
from flask_migrate import stamp as _stamp
from flask_migrate import upgrade as _upgrade
from flask_migrate.cli import db as flask_migrate_db

from idp.extensions import migrate
from idp.plugins import get_registry


def core_versions(config) -> str:
    """The folder of the core's revisions, ``versions/`` of the migrations folder."""
    return os.path.join(config.get_main_option("script_location"), "versions")


@migrate.configure
def _version_locations(config):
    """Alembic reads the core's revisions and those of every installed plugin, enabled or
    not (its ``migrations`` folder): the revisions a database has recorded are always found,
    also those of a plugin switched off after its branch was migrated. Which of them
    ``idp db upgrade`` migrates is :func:`enabled_heads`."""
    folders = [core_versions(config), *get_registry(current_app).installed_migration_folders()]
    config.set_main_option("path_separator", "os")
    # A configparser value: a literal % is written %%.
    config.set_main_option("version_locations",
                           os.pathsep.join(folders).replace("%", "%%"))
    return config


def enabled_heads(directory: str | None = None) -> list[str]:
    """The revisions ``idp db upgrade`` and ``idp db stamp`` go to when none is given: the
    heads of the core's branch, then of each enabled plugin's (a plugin that is off keeps
    what its branch made, and its revisions are neither applied nor undone)."""
    config = current_app.extensions["migrate"].migrate.get_config(directory)
    folders = [core_versions(config), *get_registry(current_app).migration_folders]
    order = {os.path.realpath(folder): rank for rank, folder in enumerate(folders)}
    heads = [(order[folder], script.revision)
             for script in ScriptDirectory.from_config(config).get_revisions("heads")
             if (folder := os.path.realpath(os.path.dirname(script.path))) in order]
    return [revision for _, revision in sorted(heads)]


def _enabled_heads(directory: str | None) -> str | tuple[str, ...]:
    """The heads of the core's branch and of the enabled plugins' branches, as the revision of
    one Alembic run (one transaction: on PostgreSQL, all of it or nothing)."""
    heads = tuple(enabled_heads(directory))
    return heads[0] if len(heads) == 1 else heads


_DIRECTORY = click.option("-d", "--directory", default=None,
                          help='Migration script directory (default is "migrations")')
_SQL = click.option("--sql", is_flag=True,
                    help="Don't emit SQL to database - dump to standard output instead")
_TAG = click.option("--tag", default=None,
                    help='Arbitrary "tag" name - can be used by custom env.py scripts')


@click.command("upgrade")
@_DIRECTORY
@_SQL
@_TAG
@click.option("-x", "--x-arg", multiple=True,
              help="Additional arguments consumed by custom env.py scripts")
@click.argument("revision", required=False)
@with_appcontext
def upgrade(directory, sql, tag, x_arg, revision):
    """Upgrade to a later version; without REVISION, to the heads of the core and of the
    enabled plugins (a plugin that is off keeps its tables as they are)."""
    directory = directory or g.directory
    _upgrade(directory, revision or _enabled_heads(directory), sql, tag, x_arg or g.x_arg)


@click.command("stamp")
@_DIRECTORY
@_SQL
@_TAG
@click.option("--purge", is_flag=True,
              help="Delete the version in the alembic_version table before stamping")
@click.argument("revision", required=False)
@with_appcontext
def stamp(directory, sql, tag, revision, purge):
    """'stamp' the revision table with the given revision (without REVISION, the heads of the
    core and of the enabled plugins); don't run any migrations"""
    directory = directory or g.directory
    _stamp(directory, revision or list(enabled_heads(directory)), sql, tag, purge)


def database_group() -> click.Group:
    """Flask-Migrate's ``db`` group, whose ``upgrade`` and ``stamp`` without a revision go to
    the heads of the core's branch and of each *enabled* plugin's (``enabled_heads``), not to
    Alembic's ``head`` (which it cannot choose among several) nor ``heads`` (which also has
    the branches of the installed plugins that are off)."""
    group = copy.copy(flask_migrate_db)
    group.commands = {**flask_migrate_db.commands, "upgrade": upgrade, "stamp": stamp}
    return group
