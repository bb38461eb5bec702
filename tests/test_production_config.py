"""A production configuration that is unsafe refuses to start, saying what to fix."""

import pytest

from idp import create_app
from idp.config import ConfigError
from tests.conftest import PRODUCTION_SETTINGS, base_config

SAFE = PRODUCTION_SETTINGS


def test_a_safe_production_configuration_starts(tmp_path):
    assert create_app(base_config(tmp_path, **SAFE)).config["IDP_ENV"] == "production"


@pytest.mark.parametrize(("change", "named"), [
    ({"IDP_SECRET_KEY": ""}, "IDP_SECRET_KEY"),
    ({"IDP_SECRET_KEY": "short"}, "IDP_SECRET_KEY"),
    ({"IDP_ISSUER": "http://idp.example.com"}, "IDP_ISSUER"),
    ({"IDP_DEV_OUTBOX": True}, "IDP_DEV_OUTBOX"),
    ({"IDP_MAIL_BACKEND": "outbox"}, "IDP_MAIL_BACKEND"),
    ({"IDP_SMS_BACKEND": "outbox"}, "IDP_SMS_BACKEND"),
    ({"IDP_SMS_BACKEND": "webhook", "IDP_SMS_WEBHOOK_URL": ""}, "IDP_SMS_WEBHOOK_URL"),
    ({"IDP_MAIL_FROM": "no-reply@localhost"}, "IDP_MAIL_FROM"),
])
def test_an_unsafe_production_setting_is_refused_by_name(tmp_path, change, named):
    with pytest.raises(ConfigError, match=named):
        create_app(base_config(tmp_path, **{**SAFE, **change}))


def test_sqlite_with_several_workers_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GUNICORN_WORKERS", "4")
    with pytest.raises(ConfigError, match="SQLite serves one worker"):
        create_app(base_config(tmp_path, **SAFE))


def test_loopback_http_issuer_is_allowed_in_production(tmp_path):
    app = create_app(base_config(tmp_path, **{**SAFE, "IDP_ISSUER": "http://127.0.0.1:8000"}))
    assert app.config["IDP_ISSUER"] == "http://127.0.0.1:8000"
