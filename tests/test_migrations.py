"""The Alembic migrations build exactly the schema the models describe, both ways."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from idp import create_app
from idp.extensions import db
from tests.conftest import base_config


@pytest.fixture
def app_config():
    return {"IDP_PLUGINS": "plugins.mfa"}  # the plugin's tables are migrated too


def test_migrations_match_the_models(app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


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
