"""An OpenID Connect identity provider: application factory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask

_PACKAGE = Path(__file__).resolve().parent
# An installed wheel carries the checkout's templates/ and migrations/ here (see setup.py).
_BUNDLED = _PACKAGE / "_home"
#: Where templates/ and migrations/ live: IDP_HOME when set, else the installed package's
#: copy, else the checkout this package is in.
ROOT = Path(os.environ.get("IDP_HOME")
            or (_BUNDLED if (_BUNDLED / "templates").is_dir() else _PACKAGE.parent))
#: The instance folder when IDP_INSTANCE_PATH is not set: the checkout's ``instance/``, or
#: ``./instance`` (in the working directory) for an installed package.
DEFAULT_INSTANCE = (Path.cwd() if ROOT == _BUNDLED else ROOT) / "instance"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the application; ``test_config`` overrides settings from the environment."""
    from idp import config as settings
    from idp import errors, logs, passwords, ratelimit
    from idp.auth.acr import PASSWORD_LEVEL, AcrLadder
    from idp.auth.steps import ConsentStep, PasswordStep, TermsStep
    from idp.extensions import check_csrf, csrf, db, migrate
    from idp.models import SigningKey
    from idp.plugins import PluginRegistry, load_plugins
    from idp.request_hooks import request_hooks
    from idp.selfservice.steps import AccountEmailStep
    from idp.signin.pipeline import Pipeline

    test_config = dict(test_config or {})
    instance_path = test_config.pop("INSTANCE_PATH", None) or os.environ.get(
        "IDP_INSTANCE_PATH", str(DEFAULT_INSTANCE)
    )
    app = Flask(
        __name__,
        instance_path=instance_path,
        template_folder=str(ROOT / "templates"),
        static_folder="static",
    )

    plugin_spec = test_config.get(
        "IDP_PLUGINS", os.environ.get("IDP_PLUGINS", settings.SETTINGS["IDP_PLUGINS"][0])
    )
    plugins = load_plugins(plugin_spec)
    plugin_settings: dict[str, tuple[Any, type]] = {}
    for plugin in plugins:
        plugin_settings.update(plugin.default_config)
    app.config.update(settings.load_settings(plugin_settings))
    app.config.update(test_config)
    settings.check_production(app.config)

    if not app.config["IDP_LOG_FORMAT"]:
        production = app.config["IDP_ENV"] == "production"
        app.config["IDP_LOG_FORMAT"] = "json" if production else "text"
    from idp import metrics

    metrics.init_app(app)  # first: its timer spans every other request hook
    logs.configure(app)
    _configure_flask(app, settings)

    db.init_app(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        from idp import sqlite

        with app.app_context():
            sqlite.init_app(app, db.engine)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    csrf.init_app(app)
    # Flask-WTF's own hook is switched off (WTF_CSRF_CHECK_DEFAULT): the same check runs among
    # the IdP's request hooks, for the methods that need it only.
    request_hooks(app).before(check_csrf)
    errors.init_app(app)
    passwords.init_app(app)
    ratelimit.init_app(app)

    registry = PluginRegistry(plugins=plugins)
    app.extensions["idp.registry"] = registry
    registry.add_acr_level(PASSWORD_LEVEL)
    registry.add_encrypted_column(SigningKey.private_jwk_encrypted)
    for plugin in plugins:
        plugin.init_app(app, registry)

    app.extensions["idp.pipeline"] = Pipeline(
        [PasswordStep(), AccountEmailStep(), *registry.steps, ConsentStep(), TermsStep()]
    )
    app.extensions["idp.acr_ladder"] = AcrLadder(registry.acr_levels)

    from idp import selfservice
    from idp.auth.routes import bp as auth_bp
    from idp.oauth import server
    from idp.oauth.routes import bp as oauth_bp
    from idp.oauth.routes import send_back_channel_logouts

    server.init_app(app)
    app.register_blueprint(oauth_bp)
    request_hooks(app).after(send_back_channel_logouts)
    app.register_blueprint(auth_bp)
    selfservice.init_app(app)
    for blueprint in registry.blueprints:
        app.register_blueprint(blueprint)
    if app.config["IDP_DEV_OUTBOX"]:
        from idp.delivery.outbox import bp as outbox_bp

        app.register_blueprint(outbox_bp)

    from idp import cli

    cli.init_app(app, registry)

    from idp.public_documents import PublicDocuments

    # Discovery and the JWKS, once rendered, are answered before Flask (same answer, headers
    # and metrics); everything else goes through Flask.
    app.wsgi_app = PublicDocuments(app, app.wsgi_app)

    if app.config["IDP_PROXY_COUNT"] > 0:
        # Behind a load balancer: trust that many X-Forwarded-For/-Proto hops, no more.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["IDP_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    @app.get("/healthz")
    def healthz():
        """The process is up (no dependency is checked)."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        """The database answers, and Redis when configured; no detail is given either way."""
        from sqlalchemy import text

        try:
            db.session.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means not ready
            logging.getLogger("idp.readyz").warning("database not reachable", exc_info=True)
            db.session.rollback()
            return {"status": "unavailable"}, 503
        try:
            ratelimit.ping()
        except ratelimit.RateLimitUnavailable:  # logged by the rate limits
            return {"status": "unavailable"}, 503
        return {"status": "ready"}

    from idp import headers

    headers.init_app(app)  # Content-Security-Policy, HSTS in production, nosniff, ...

    return app


def _configure_flask(app: Flask, settings) -> None:
    config = app.config
    secret = config["IDP_SECRET_KEY"] or settings.development_secret_key(app.instance_path)
    config["SECRET_KEY"] = secret
    if not config.get("SQLALCHEMY_DATABASE_URI"):
        url = config["IDP_DATABASE_URL"]
        if not url:
            Path(app.instance_path).mkdir(parents=True, exist_ok=True)
            url = "sqlite:///" + str(Path(app.instance_path) / "idp.db")
        config["SQLALCHEMY_DATABASE_URI"] = url
    config["SQLALCHEMY_DATABASE_URI"] = settings.database_url(config["SQLALCHEMY_DATABASE_URI"])
    settings.check_optional_parts(config)
    config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", settings.engine_options(config))
    https = config["IDP_ISSUER"].startswith("https://")
    config.update(
        SESSION_COOKIE_NAME="idp_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        PERMANENT_SESSION_LIFETIME=config["IDP_SESSION_LIFETIME"],
        # The cookie is written when it changes (a sign-in, a new CSRF token), not signed
        # again on every request: the SSO session's lifetime is counted on the server.
        SESSION_REFRESH_EACH_REQUEST=False,
        MAX_CONTENT_LENGTH=256 * 1024,
        WTF_CSRF_TIME_LIMIT=config["IDP_PENDING_LIFETIME"],
        WTF_CSRF_SSL_STRICT=False,
        WTF_CSRF_CHECK_DEFAULT=False,  # checked by idp.extensions.check_csrf
    )
    from idp.cookie_session import CookieSessionInterface

    app.session_interface = CookieSessionInterface()
    if not https:
        # Authlib refuses plain http outside loopback; the issuer decides, not the request.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
