"""Self-service accounts: Create New Account, Forgot your username?, Forgot your password?
and the account email's verification (see ``pages``)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from idp.selfservice.pages import bp

    app.register_blueprint(bp)
