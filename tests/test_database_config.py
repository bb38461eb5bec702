"""Connection pool and statement timeout settings (IDP_DB_*): they reach a PostgreSQL engine,
the timeout cancels a long statement, SQLite keeps its defaults, bad values are refused."""

import time

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import make_url

from idp import create_app
from idp.extensions import db
from tests.conftest import assert_setting_refused, base_config


def postgres_app(tmp_path, url, **settings):
    return create_app(base_config(tmp_path, SQLALCHEMY_DATABASE_URI=url, **settings))


def test_pool_settings_from_the_environment_reach_the_postgresql_engine(
        tmp_path, postgres_database, monkeypatch):
    for name, value in (("IDP_DB_POOL_SIZE", "3"), ("IDP_DB_MAX_OVERFLOW", "2"),
                        ("IDP_DB_POOL_TIMEOUT", "7"), ("IDP_DB_POOL_RECYCLE", "600")):
        monkeypatch.setenv(name, value)
    app = postgres_app(tmp_path, postgres_database())
    with app.app_context():
        pool = db.engine.pool
        assert pool.size() == 3
        assert pool._max_overflow == 2
        assert pool._timeout == 7
        assert pool._recycle == 600
        assert pool._pre_ping is True
        db.engine.dispose()


def test_a_full_pool_makes_the_next_request_for_a_connection_wait_and_give_up(
        tmp_path, postgres_database):
    app = postgres_app(tmp_path, postgres_database(), IDP_DB_POOL_SIZE=1,
                       IDP_DB_MAX_OVERFLOW=0, IDP_DB_POOL_TIMEOUT=1)
    with app.app_context():
        with db.engine.connect() as held:
            held.execute(text("SELECT 1"))
            started = time.monotonic()
            with pytest.raises(sqlalchemy.exc.TimeoutError):
                db.engine.connect()
            assert 0.9 < time.monotonic() - started < 5
        with db.engine.connect() as again:  # given back: usable again
            assert again.execute(text("SELECT 1")).scalar() == 1
        db.engine.dispose()


def test_pooled_connections_are_checked_before_use_and_replaced_when_dead(
        tmp_path, postgres_database, postgres_server):
    app = postgres_app(tmp_path, postgres_database())
    with app.app_context():
        with db.engine.connect() as connection:
            backend = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        postgres_server.execute(f"SELECT pg_terminate_backend({int(backend)})")
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != backend
        db.engine.dispose()


def test_a_statement_that_exceeds_the_statement_timeout_is_cancelled(
        tmp_path, postgres_database, monkeypatch):
    monkeypatch.setenv("IDP_DB_STATEMENT_TIMEOUT_MS", "300")
    app = postgres_app(tmp_path, postgres_database())
    with app.app_context():
        assert db.session.execute(text("SHOW statement_timeout")).scalar() == "300ms"
        db.session.execute(text("SELECT pg_sleep(0.01)"))
        started = time.monotonic()
        with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
            db.session.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 4
        db.session.rollback()
        assert db.session.execute(text("SELECT 1")).scalar() == 1  # the session goes on
        db.session.remove()
        db.engine.dispose()


def test_without_a_statement_timeout_postgresql_sets_none(tmp_path, postgres_database):
    app = postgres_app(tmp_path, postgres_database())
    with app.app_context():
        assert db.session.execute(text("SHOW statement_timeout")).scalar() == "0"
        db.session.remove()
        db.engine.dispose()


def test_a_postgresql_url_without_a_driver_connects_with_psycopg_3(
        tmp_path, postgres_database, monkeypatch):
    url = make_url(postgres_database()).set(drivername="postgresql")
    monkeypatch.setenv("IDP_DATABASE_URL", url.render_as_string(hide_password=False))
    config = base_config(tmp_path)
    del config["SQLALCHEMY_DATABASE_URI"]
    app = create_app(config)
    with app.app_context():
        assert db.engine.dialect.driver == "psycopg"
        assert db.session.execute(text("SELECT 1")).scalar() == 1
        db.session.remove()
        db.engine.dispose()


def test_sqlite_keeps_its_defaults_whatever_the_pool_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("IDP_DB_POOL_SIZE", "3")
    monkeypatch.setenv("IDP_DB_STATEMENT_TIMEOUT_MS", "100")
    app = create_app(base_config(tmp_path))
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"] == {"connect_args": {"timeout": 30}}
    with app.app_context():
        assert db.engine.pool.size() != 3
        db.engine.dispose()


@pytest.mark.parametrize("name,value", [
    ("IDP_DB_POOL_SIZE", "0"),
    ("IDP_DB_POOL_SIZE", "five"),
    ("IDP_DB_MAX_OVERFLOW", "-1"),
    ("IDP_DB_POOL_TIMEOUT", "0"),
    ("IDP_DB_POOL_TIMEOUT", "2.5"),
    ("IDP_DB_POOL_RECYCLE", "1.5"),
    ("IDP_DB_POOL_RECYCLE", "-1"),
    ("IDP_DB_STATEMENT_TIMEOUT_MS", "-100"),
    ("IDP_DB_STATEMENT_TIMEOUT_MS", "5s"),
])
def test_a_bad_database_setting_stops_the_start_naming_the_variable(
        tmp_path, monkeypatch, name, value):
    assert_setting_refused(tmp_path, monkeypatch, name, value)


def test_a_row_created_twice_at_once_is_kept_once_without_an_error(app, alice, rp):
    """Two presses of I Agree (two tabs, two instances) create the same row: the second
    insert finds it instead of failing on the unique constraint."""
    from idp.extensions import insert_unless_present
    from idp.models import TermsAcceptance
    from idp.timeutil import utcnow

    values = {"user_id": alice.id, "client_id": rp[0].client_id, "terms_digest": "first",
              "accepted_at": utcnow()}
    insert_unless_present(TermsAcceptance, values, ["user_id", "client_id"])
    insert_unless_present(TermsAcceptance, {**values, "terms_digest": "second"},
                          ["user_id", "client_id"])
    db.session.commit()
    rows = db.session.scalars(db.select(TermsAcceptance).filter_by(user_id=alice.id)).all()
    assert [row.terms_digest for row in rows] == ["first"]
