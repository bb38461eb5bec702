"""Self-service accounts: Create New Account, Forgot your username?, Forgot your password?
the account email's verification (see ``pages``) and the account page (``account``)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from idp.selfservice import account  # noqa: F401 - the account page's routes
    from idp.selfservice.pages import bp

    app.register_blueprint(bp)
    app.context_processor(lambda: {"account_url": account.account_url})
