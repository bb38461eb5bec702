"""The Alembic migrations build exactly the schema the models describe, both ways, on SQLite
and on PostgreSQL. The core's revisions (``migrations/versions``) are one branch; the MFA
plugin's (``plugins/mfa/migrations/versions``, label ``mfa``) are its own, which Alembic always
reads (the plugin is installed) but ``idp db upgrade`` migrates only when the plugin is
enabled. ``idp db upgrade`` brings an empty database, one a migration behind with data in
it, or one made by the former single linear history (MFA tables made by core revisions) to
every head; switching the plugin off leaves its tables and its branch as they are."""

import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from idp import ROOT, create_app
from idp.cli.database import enabled_heads
from idp.extensions import db
from idp.plugins import get_registry
from plugins.mfa import models as mfa_models
from plugins.mfa import plugin as mfa_plugin
from tests.conftest import base_config, install_plugin_distribution

ALL_PLUGINS = "plugins.mfa"  # the plugin's tables are migrated too
CORE_VERSIONS = ROOT / "migrations" / "versions"
MFA_VERSIONS = Path(mfa_plugin.migrations)
#: The tables of the MFA plugin's models.
MFA_TABLES = {model.__tablename__ for model in vars(mfa_models).values()
              if isinstance(model, type) and issubclass(model, db.Model)
              and model.__module__ == mfa_models.__name__}
#: Core revisions of the former linear history that made MFA tables -> the plugin's revision
#: that makes them now.
LINEAR_MFA_REVISIONS = {"0003_mfa": "mfa_0001_tables",
                        "0005_mfa_failure_cap": "mfa_0002_failure_cap"}


@pytest.fixture
def app_config():
    return {"IDP_PLUGINS": ALL_PLUGINS}


def chain(folder: Path) -> list[str]:
    """The revisions of one version folder (one branch, linear), oldest first; the current
    application's migrations must know them (the plugin's also when it is off)."""
    script = ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config())
    found = [r.revision for r in script.walk_revisions()
             if Path(r.path).resolve().parent == folder.resolve()]
    assert found, f"no revision of {folder} is known"
    return found[::-1]


def current_heads() -> set[str]:
    with db.engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def mfa_plugin_is_on() -> bool:
    return any(plugin is mfa_plugin for plugin in get_registry(current_app).plugins)


def model_differences() -> list:
    """What autogenerate would change: the models of the core and of the enabled plugins
    against the database (the MFA models may be imported while the plugin is off)."""
    skipped = set() if mfa_plugin_is_on() else MFA_TABLES

    def include(thing, name, kind, reflected, compare_to):
        return not (kind == "table" and name in skipped)

    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include})
        return compare_metadata(context, db.metadata)


def table_names() -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def schema() -> dict:
    """Tables with their columns, keys and indexes (and, on PostgreSQL, the sequences)."""
    inspector = inspect(db.engine)
    tables = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        tables[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"])
                        for c in inspector.get_columns(table)],
            "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign keys": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"],
                 tuple(fk["referred_columns"]), (fk.get("options") or {}).get("ondelete"))
                for fk in inspector.get_foreign_keys(table)),
            "unique": sorted(tuple(u["column_names"])
                             for u in inspector.get_unique_constraints(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table)),
        }
    if db.engine.dialect.name == "postgresql":
        tables["(sequences)"] = sorted(inspector.get_sequence_names())
    return tables


def test_migrations_match_the_models(app):
    assert table_names() >= MFA_TABLES
    assert model_differences() == []


def test_every_migration_upgrades_and_downgrades(tmp_path):
    app = create_app(base_config(tmp_path, IDP_PLUGINS=""))
    with app.app_context():
        upgrade(revision="heads")
        assert "users" in inspect(db.engine).get_table_names()
        downgrade(revision="base")
        assert "users" not in inspect(db.engine).get_table_names()
        upgrade(revision="heads")
        assert {"clients", "tokens", "sso_sessions", "pending_authorizations"} <= set(
            inspect(db.engine).get_table_names()
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path) -> str:
    """The URL of an empty database: an SQLite file, or a new database on the test
    PostgreSQL server (which this starts, whatever --database says)."""
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "empty.db")
    return request.getfixturevalue("postgres_database")()


def test_each_migration_upgrades_and_downgrades_one_step_at_a_time(tmp_path, empty_database):
    """Up the core's branch one revision at a time, then the plugin's; down the plugin's
    branch (``mfa@-1``), then the core's (``-1``): each step back leaves what it found."""
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=empty_database))
    with app.app_context():
        core, plugin = chain(CORE_VERSIONS), chain(MFA_VERSIONS)
        states = [(current_heads(), schema())]
        assert states[0][0] == set()
        assert states[0][1] in ({}, {"(sequences)": []})
        for revision in [*core, *plugin]:  # base -> heads
            upgrade(revision=revision)
            assert revision in current_heads()
            states.append((current_heads(), schema()))
        assert current_heads() == {core[-1], plugin[-1]}
        assert model_differences() == []

        for target in ["mfa@-1"] * len(plugin) + ["-1"] * len(core):  # heads -> base
            downgrade(revision=target)
            states.pop()
            heads, before = states[-1]
            assert current_heads() == heads
            assert schema() == before, f"{target} to {heads} left a difference"

        upgrade(revision="heads")  # base -> heads again
        assert current_heads() == {core[-1], plugin[-1]}
        assert model_differences() == []
        db.engine.dispose()


def test_downgrading_the_plugins_branch_drops_only_its_tables(tmp_path, empty_database):
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=empty_database))
    with app.app_context():
        upgrade(revision="heads")
        every_table = table_names()
        with db.engine.begin() as connection:
            filled = fill_every_table(connection)

        downgrade(revision="mfa@base")

        assert table_names() == every_table - MFA_TABLES
        assert current_heads() == {chain(CORE_VERSIONS)[-1]}
        with db.engine.connect() as connection:
            counts = row_counts(connection)
        assert counts == {name: 1 for name in filled if name not in MFA_TABLES}
        upgrade(revision="heads")  # and back
        assert table_names() == every_table
        assert model_differences() == []
        db.engine.dispose()


@pytest.mark.parametrize("linear_revision", ["0006_consent_in_progress", "0004_auth_time_bigint"])
def test_a_database_of_the_former_linear_history_upgrades_to_both_heads_keeping_its_mfa_rows(
        tmp_path, empty_database, linear_revision):
    """Before the plugin had its own branch, core revisions made its tables and
    ``alembic_version`` held one row. Such a database (at the last of those revisions, or at
    one between them), with a row in every table, gets the plugin's branch recorded, its
    missing table made, and loses nothing."""
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=empty_database))
    with app.app_context():
        core, plugin = chain(CORE_VERSIONS), chain(MFA_VERSIONS)
        # The schema the linear history made up to linear_revision, recorded as it recorded it.
        upgrade(revision=linear_revision)
        made_by_then = core[:core.index(linear_revision) + 1]
        for old, new in LINEAR_MFA_REVISIONS.items():
            if old in made_by_then:
                upgrade(revision=new)
        with db.engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM alembic_version"))
            connection.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES (:v)"),
                               {"v": linear_revision})
            filled = fill_every_table(connection)
        assert current_heads() == {linear_revision}
        assert {"mfa_accounts", "mfa_factors"} <= set(filled)

        upgrade(revision="heads")

        assert current_heads() == {core[-1], plugin[-1]}
        assert model_differences() == []
        with db.engine.connect() as connection:
            counts = row_counts(connection)
        assert {name: counts[name] for name in filled} == filled  # nothing was lost
        assert set(counts) >= MFA_TABLES
        db.engine.dispose()


# --- `idp db upgrade` -----------------------------------------------------------------------


def idp_command(tmp_path, url, plugins=ALL_PLUGINS) -> tuple[str, dict]:
    """The ``idp`` program of this virtualenv and an environment for it on ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.pop("FLASK_APP", None)
    env.update(IDP_DATABASE_URL=url, IDP_PLUGINS=plugins,
               IDP_INSTANCE_PATH=str(tmp_path / "instance"),
               IDP_SECRET_KEY="subprocess-secret-key-0123456789-abcdefghij")
    return shutil.which("idp", path=str(Path(sys.executable).parent)) or "idp", env


def run_idp(tmp_path, url, *args, input=None, plugins=ALL_PLUGINS):
    idp, env = idp_command(tmp_path, url, plugins)
    return subprocess.run([idp, *args], env=env, cwd=tmp_path, input=input,
                          capture_output=True, text=True, timeout=120, check=False)


def sample_value(column: sa.Column):
    kind = column.type
    for types, value in ((sa.Boolean, False), (sa.Integer, 7), (sa.DateTime, datetime(2025, 1, 2)),
                         (sa.JSON, {"sample": [1]}), (sa.String, "sample"), (sa.Float, 1.5)):
        if isinstance(kind, types):
            return value
    raise AssertionError(f"no sample value for {column.table.name}.{column.name} ({kind!r})")


def fill_every_table(connection) -> dict[str, int]:
    """One row in every table (references point at the rows made before); row counts."""
    tables = sa.MetaData()
    tables.reflect(bind=connection)
    rows: dict[str, dict] = {}
    for table in tables.sorted_tables:
        if table.name == "alembic_version":
            continue
        values = {}
        for column in table.columns:
            if column.foreign_keys:
                target = next(iter(column.foreign_keys)).column
                values[column.name] = rows[target.table.name][target.name]
            elif not (column.primary_key and column.autoincrement
                      and isinstance(column.type, sa.Integer)):
                values[column.name] = sample_value(column)
        inserted = connection.execute(sa.insert(table).values(values).returning(*table.c))
        rows[table.name] = dict(inserted.one()._mapping)
    return {name: 1 for name in rows}


def row_counts(connection) -> dict[str, int]:
    tables = sa.MetaData()
    tables.reflect(bind=connection)
    return {table.name: connection.execute(sa.select(sa.func.count()).select_from(table))
            .scalar() for table in tables.sorted_tables if table.name != "alembic_version"}


def test_idp_db_upgrade_without_the_plugin_makes_no_mfa_table(tmp_path, empty_database):
    result = run_idp(tmp_path, empty_database, "db", "upgrade", plugins="")

    assert result.returncode == 0, result.stderr
    app = create_app(base_config(tmp_path, IDP_PLUGINS="",
                                 SQLALCHEMY_DATABASE_URI=empty_database))
    with app.app_context():
        assert current_heads() == {chain(CORE_VERSIONS)[-1]}
        assert "users" in table_names()
        assert table_names() & MFA_TABLES == set()
        assert [name for name in table_names() if name.startswith("mfa")] == []
        assert model_differences() == []
        db.engine.dispose()


def assert_at_both_heads_with_the_plugins_tables(tmp_path, database_url: str) -> None:
    """The database is at the heads of the core's and the MFA plugin's branches, with the
    plugin's tables exactly as its models describe them."""
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=database_url))
    with app.app_context():
        assert current_heads() == {chain(CORE_VERSIONS)[-1], chain(MFA_VERSIONS)[-1]}
        assert table_names() >= MFA_TABLES
        assert model_differences() == []
        db.engine.dispose()


def test_a_plugin_switched_on_after_the_first_upgrade_gets_its_tables_from_idp_db_upgrade(
        tmp_path, empty_database):
    assert run_idp(tmp_path, empty_database, "db", "upgrade", plugins="").returncode == 0

    result = run_idp(tmp_path, empty_database, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    assert_at_both_heads_with_the_plugins_tables(tmp_path, empty_database)


def test_switching_the_plugin_off_after_its_branch_was_migrated_keeps_its_tables_and_rows(
        tmp_path, empty_database):
    """The plugin's revision stays in ``alembic_version`` and Alembic still finds it: the
    upgrade (docker/entrypoint's) succeeds and touches nothing of the plugin; switched on
    again, the plugin finds its rows."""
    assert run_idp(tmp_path, empty_database, "db", "upgrade").returncode == 0
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=empty_database))
    with app.app_context():
        heads = {chain(CORE_VERSIONS)[-1], chain(MFA_VERSIONS)[-1]}
        assert current_heads() == heads
        with db.engine.begin() as connection:
            filled = fill_every_table(connection)
        db.engine.dispose()
    assert set(filled) >= MFA_TABLES

    switched_off = run_idp(tmp_path, empty_database, "db", "upgrade", plugins="")
    assert switched_off.returncode == 0, switched_off.stderr
    with app.app_context():
        assert current_heads() == heads
        with db.engine.connect() as connection:
            assert row_counts(connection) == filled
        db.engine.dispose()
    stamped = run_idp(tmp_path, empty_database, "db", "stamp", plugins="")
    assert stamped.returncode == 0, stamped.stderr

    switched_on = run_idp(tmp_path, empty_database, "db", "upgrade")
    assert switched_on.returncode == 0, switched_on.stderr
    with app.app_context():
        assert current_heads() == heads
        assert model_differences() == []
        with db.engine.connect() as connection:
            assert row_counts(connection) == filled
        db.engine.dispose()


def test_with_the_plugin_off_the_core_is_upgraded_and_the_plugins_branch_stays_where_it_is(
        tmp_path, empty_database):
    """Both branches one revision behind, with rows: without the plugin the core gets its
    head and the plugin's branch neither moves nor loses a row; with it, it gets its head."""
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=empty_database))
    with app.app_context():
        core, plugin = chain(CORE_VERSIONS), chain(MFA_VERSIONS)
        for revision in (core[-2], plugin[-2]):
            upgrade(revision=revision)
        with db.engine.begin() as connection:
            filled = fill_every_table(connection)
        mfa_before = {name: shape for name, shape in schema().items() if name in MFA_TABLES}
        db.engine.dispose()
    assert mfa_before

    result = run_idp(tmp_path, empty_database, "db", "upgrade", plugins="")

    assert result.returncode == 0, result.stderr
    with app.app_context():
        assert current_heads() == {core[-1], plugin[-2]}
        assert {name: shape for name, shape in schema().items()
                if name in MFA_TABLES} == mfa_before
        with db.engine.connect() as connection:
            counts = row_counts(connection)
        assert {name: counts[name] for name in filled} == filled
        db.engine.dispose()

    result = run_idp(tmp_path, empty_database, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    with app.app_context():
        assert current_heads() == {core[-1], plugin[-1]}
        assert model_differences() == []
        # The plugin's last revision did change its tables.
        assert {name: shape for name, shape in schema().items()
                if name in MFA_TABLES} != mfa_before
        db.engine.dispose()


def test_alembic_finds_the_branch_of_a_plugin_that_is_off_and_skips_one_that_cannot_load(
        tmp_path, monkeypatch, caplog):
    """Every plugin of an ``idp.plugins`` entry point gives Alembic its folder, enabled or
    not; one whose import fails is left out with a warning, and the upgrade goes on."""
    install_plugin_distribution(tmp_path, monkeypatch, "broken-idp-plugin",
                                "broken = no_such_idp_plugin:plugin")
    app = create_app(base_config(tmp_path, IDP_PLUGINS=""))
    with app.app_context():
        registry = get_registry(app)
        assert registry.migration_folders == []
        with caplog.at_level("WARNING", logger="idp.plugins"):
            assert [Path(folder) for folder in registry.installed_migration_folders()] == [
                MFA_VERSIONS]
        assert "'broken'" in caplog.text and "no_such_idp_plugin" in caplog.text
        assert chain(MFA_VERSIONS)  # known to Alembic
        assert enabled_heads() == [chain(CORE_VERSIONS)[-1]]
        upgrade(revision=enabled_heads()[0])
        assert table_names() & MFA_TABLES == set()


def test_idp_db_upgrade_with_the_plugin_migrates_both_heads(tmp_path, empty_database):
    result = run_idp(tmp_path, empty_database, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    assert_at_both_heads_with_the_plugins_tables(tmp_path, empty_database)
    created = run_idp(tmp_path, empty_database, "users", "create", "--username", "bob",
                      "--email", "bob@example.com", "--password-stdin",
                      input="Bob-Password-1\n")
    assert created.returncode == 0, created.stderr
    assert "bob" in run_idp(tmp_path, empty_database, "users", "list").stdout


def test_replicas_upgrading_one_postgresql_database_at_once_all_succeed(
        tmp_path, postgres_database):
    """Three `idp db upgrade` started together on an empty database: they take turns (an
    advisory lock), the first migrates and the others find it at the heads."""
    url = postgres_database()
    idp, env = idp_command(tmp_path, url)
    started = [subprocess.Popen([idp, "db", "upgrade"], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    outcomes = [process.communicate(timeout=120) for process in started]
    assert [process.returncode for process in started] == [0, 0, 0], outcomes
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS, SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        assert current_heads() == {chain(CORE_VERSIONS)[-1], chain(MFA_VERSIONS)[-1]}
        assert model_differences() == []
        db.engine.dispose()


def test_idp_db_upgrade_brings_a_postgresql_database_with_data_from_the_previous_migration(
        tmp_path, postgres_database):
    """A database one revision behind on each branch, with a row in every table."""
    url = postgres_database()
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS, SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        core, plugin = chain(CORE_VERSIONS), chain(MFA_VERSIONS)
        previous = {core[-2], plugin[-2]}
        for revision in previous:
            upgrade(revision=revision)
        assert current_heads() == previous
        with db.engine.begin() as connection:
            filled = fill_every_table(connection)
        db.engine.dispose()
    assert filled, "the previous migrations have no tables to fill"

    result = run_idp(tmp_path, url, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    with app.app_context():
        assert current_heads() == {core[-1], plugin[-1]}
        assert model_differences() == []
        with db.engine.connect() as connection:
            counts = row_counts(connection)
        db.engine.dispose()
    assert {name: counts[name] for name in filled} == filled  # nothing was lost
    created = run_idp(tmp_path, url, "users", "create", "--username", "bob", "--email",
                      "bob@example.com", "--password-stdin", input="Bob-Password-1\n")
    assert created.returncode == 0, created.stderr
    listed = run_idp(tmp_path, url, "users", "list").stdout
    assert "sample" in listed and "bob" in listed


def test_migrations_run_without_the_statement_timeout_requests_get(tmp_path, postgres_database):
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 IDP_DB_STATEMENT_TIMEOUT_MS=5000,
                                 SQLALCHEMY_DATABASE_URI=postgres_database()))
    seen = []

    def after_each_migration(ctx, step, heads, run_args):
        seen.append(ctx.connection.exec_driver_sql("SHOW statement_timeout").scalar())

    app.extensions["migrate"].configure_args["on_version_apply"] = after_each_migration
    with app.app_context():
        revisions = chain(CORE_VERSIONS) + chain(MFA_VERSIONS)
        upgrade(revision="heads")
        downgrade(revision="base")
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
        db.engine.dispose()
    assert seen == ["0"] * (2 * len(revisions))
