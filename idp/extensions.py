"""Flask extension objects, created unbound and initialised in ``create_app``."""

from flask import current_app, request
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate(render_as_batch=True, compare_type=True)
csrf = CSRFProtect()


def check_csrf() -> None:
    """Flask-WTF's CSRF check of a form post (a request hook; ``csrf.exempt`` views and
    blueprints are skipped), done only for the methods it applies to."""
    config = current_app.config
    if request.method in config["WTF_CSRF_METHODS"] and config["WTF_CSRF_ENABLED"]:
        csrf.protect(apply_exemptions=True)


def dialect_insert(target):
    """An INSERT of the database's dialect (PostgreSQL or SQLite), which has ``ON CONFLICT``."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = pg_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return insert(target)


def insert_unless_present(model: type[Base], values: dict, keys: list[str]) -> None:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` on PostgreSQL and SQLite: when several
    requests (tabs, instances) create the same row at once, one row is kept and no request
    fails. The row is locked for the rest of the transaction on PostgreSQL once it exists."""
    db.session.execute(dialect_insert(model).values(**values).on_conflict_do_nothing(
        index_elements=keys))


def upsert(model: type[Base], values: dict, keys: list[str]) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE``: the row with these keys gets the other
    ``values``, whether it existed or not, in one statement that concurrent requests cannot
    make fail."""
    statement = dialect_insert(model).values(**values)
    db.session.execute(statement.on_conflict_do_update(
        index_elements=keys,
        set_={name: statement.excluded[name] for name in values if name not in keys}))
