"""The ``idp`` program: Flask's CLI on the application, with the admin commands that
``create_app`` registers (``idp.cli`` and the plugins' groups)."""

from __future__ import annotations

import sys

import click
from flask.cli import FlaskGroup
from sqlalchemy.exc import OperationalError, ProgrammingError


class IdpGroup(FlaskGroup):
    """Flask's CLI group; a database that is unreachable or not migrated is a clear error."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (OperationalError, ProgrammingError) as exc:
            raise click.ClickException(
                f"Database error: {exc.orig}. Check IDP_DATABASE_URL and run "
                "`idp db upgrade` to create or update the schema."
            ) from None


def main() -> None:
    from idp import create_app
    from idp.config import ConfigError

    try:
        IdpGroup(create_app=lambda: create_app(), help="Administer the identity provider.")(
            prog_name="idp"
        )
    except ConfigError as exc:  # the settings are wrong: say which, without a traceback
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
