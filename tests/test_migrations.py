"""The Alembic migrations build exactly the schema the models describe, both ways, on SQLite
and on PostgreSQL; ``idp db upgrade`` brings an empty database, or one a migration behind
with data in it, to the latest schema."""

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
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from idp import ROOT, create_app
from idp.extensions import db
from tests.conftest import base_config

ALL_PLUGINS = "plugins.mfa"  # the plugin's tables are migrated too


@pytest.fixture
def app_config():
    return {"IDP_PLUGINS": ALL_PLUGINS}


def revisions() -> list[str]:
    """Every revision, oldest first (the history is linear)."""
    script = ScriptDirectory(str(ROOT / "migrations"))
    assert len(script.get_heads()) == 1, "the migrations have several heads"
    return [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]


def current_revision() -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def model_differences() -> list:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


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
    assert model_differences() == []


def test_every_migration_upgrades_and_downgrades(tmp_path):
    app = create_app(base_config(tmp_path, IDP_PLUGINS=""))
    with app.app_context():
        upgrade()
        assert "users" in inspect(db.engine).get_table_names()
        downgrade(revision="base")
        assert "users" not in inspect(db.engine).get_table_names()
        upgrade()
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
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS,
                                 SQLALCHEMY_DATABASE_URI=empty_database))
    history = revisions()
    with app.app_context():
        assert current_revision() is None
        before = {None: schema()}
        assert before[None] in ({}, {"(sequences)": []})
        for revision in history:  # base -> head
            upgrade(revision="+1")
            assert current_revision() == revision
            before[revision] = schema()
        assert model_differences() == []

        for previous in [None, *history[:-1]][::-1]:  # head -> base
            downgrade(revision="-1")
            assert current_revision() == previous
            assert schema() == before[previous], f"downgrade to {previous} left a difference"

        upgrade()  # base -> head again
        assert current_revision() == history[-1]
        assert schema() == before[history[-1]]
        assert model_differences() == []
        db.engine.dispose()


# --- `idp db upgrade` on PostgreSQL ---------------------------------------------------------


def idp_command(tmp_path, url) -> tuple[str, dict]:
    """The ``idp`` program of this virtualenv and an environment for it on ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.pop("FLASK_APP", None)
    env.update(IDP_DATABASE_URL=url, IDP_PLUGINS=ALL_PLUGINS,
               IDP_INSTANCE_PATH=str(tmp_path / "instance"),
               IDP_SECRET_KEY="subprocess-secret-key-0123456789-abcdefghij")
    return shutil.which("idp", path=str(Path(sys.executable).parent)) or "idp", env


def run_idp(tmp_path, url, *args, input=None):
    idp, env = idp_command(tmp_path, url)
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


def test_idp_db_upgrade_migrates_an_empty_postgresql_database(tmp_path, postgres_database):
    url = postgres_database()

    result = run_idp(tmp_path, url, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS, SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        assert current_revision() == revisions()[-1]
        assert model_differences() == []
        db.engine.dispose()
    created = run_idp(tmp_path, url, "users", "create", "--username", "bob", "--email",
                      "bob@example.com", "--password-stdin", input="Bob-Password-1\n")
    assert created.returncode == 0, created.stderr
    assert "bob" in run_idp(tmp_path, url, "users", "list").stdout


def test_replicas_upgrading_one_postgresql_database_at_once_all_succeed(
        tmp_path, postgres_database):
    """Three `idp db upgrade` started together on an empty database: they take turns (an
    advisory lock), the first migrates and the others find it at the head."""
    url = postgres_database()
    idp, env = idp_command(tmp_path, url)
    started = [subprocess.Popen([idp, "db", "upgrade"], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
    outcomes = [process.communicate(timeout=120) for process in started]
    assert [process.returncode for process in started] == [0, 0, 0], outcomes
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS, SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        assert current_revision() == revisions()[-1]
        assert model_differences() == []
        db.engine.dispose()


def test_idp_db_upgrade_brings_a_postgresql_database_with_data_from_the_previous_migration(
        tmp_path, postgres_database):
    url = postgres_database()
    *_, previous, head = [None, *revisions()]
    app = create_app(base_config(tmp_path, IDP_PLUGINS=ALL_PLUGINS, SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        upgrade(revision=previous or "base")
        assert current_revision() == previous
        with db.engine.begin() as connection:
            filled = fill_every_table(connection)
        db.engine.dispose()
    assert filled, "the previous migration has no tables to fill"

    result = run_idp(tmp_path, url, "db", "upgrade")

    assert result.returncode == 0, result.stderr
    with app.app_context():
        assert current_revision() == head
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
        upgrade()
        downgrade(revision="base")
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "5s"
        db.engine.dispose()
    assert seen == ["0"] * (2 * len(revisions()))
