"""A production configuration that is unsafe refuses to start, saying what to fix."""

import pytest

from idp import create_app
from idp.config import ConfigError
from tests.conftest import PRODUCTION_SETTINGS, assert_setting_refused, base_config

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


# --- transport, delivery, encryption key and MFA limits ----------------------------------


@pytest.mark.parametrize(("change", "named"), [
    ({"IDP_ENCRYPTION_KEY": ""}, "IDP_ENCRYPTION_KEY"),
    ({"IDP_ENCRYPTION_KEY": "too-short"}, "IDP_ENCRYPTION_KEY"),
    ({"IDP_SMTP_SECURITY": "none"}, "IDP_SMTP_SECURITY"),
    ({"IDP_SMS_BACKEND": "twilio", "IDP_TWILIO_ACCOUNT_SID": "AC1", "IDP_TWILIO_AUTH_TOKEN": "t",
      "IDP_TWILIO_FROM_NUMBER": "+12025550100", "IDP_TWILIO_BASE_URL": "http://api.example.com"},
     "IDP_TWILIO_BASE_URL"),
])
def test_production_refuses_plain_transport_and_a_missing_encryption_key(tmp_path, change,
                                                                           named):
    with pytest.raises(ConfigError, match=named):
        create_app(base_config(tmp_path, **{**SAFE, **change}))


def test_smtp_without_tls_is_allowed_in_production_only_when_the_operator_says_so(tmp_path):
    plain = {**SAFE, "IDP_SMTP_SECURITY": "none", "IDP_SMTP_HOST": "127.0.0.1"}
    with pytest.raises(ConfigError, match="IDP_SMTP_ALLOW_PLAINTEXT=1"):
        create_app(base_config(tmp_path, **plain))
    app = create_app(base_config(tmp_path, **plain, IDP_SMTP_ALLOW_PLAINTEXT="1"))
    assert app.config["IDP_SMTP_ALLOW_PLAINTEXT"] is True


def test_an_sms_webhook_over_plain_http_is_refused_in_production_unless_on_loopback(tmp_path):
    with pytest.raises(ConfigError, match="IDP_SMS_WEBHOOK_URL must use https"):
        create_app(base_config(tmp_path, **{
            **SAFE, "IDP_SMS_WEBHOOK_URL": "http://sms.example.com/send"}))
    app = create_app(base_config(tmp_path, **{
        **SAFE, "IDP_SMS_WEBHOOK_URL": "http://127.0.0.1:9000/sms"}))
    assert app.config["IDP_SMS_WEBHOOK_URL"] == "http://127.0.0.1:9000/sms"


@pytest.mark.parametrize(("name", "least", "greatest"), [
    ("IDP_MFA_LOCKOUT_SECONDS", 60, 86400),
    ("IDP_PASSCODE_MAX_ATTEMPTS", 1, 10),
    ("IDP_MFA_MAX_FAILURES", 1, 100),
    ("IDP_REMEMBER_DEVICE_DAYS", 0, 400),
    ("IDP_EMAIL_LINK_MINUTES", 1, 1440),
])
def test_mfa_limits_are_accepted_only_within_their_ranges(tmp_path, monkeypatch, name, least,
                                                          greatest):
    for value in (least - 1, greatest + 1):
        assert_setting_refused(tmp_path, monkeypatch, name, str(value),
                               IDP_PLUGINS="plugins.mfa")
        with pytest.raises(ConfigError, match=name):
            create_app(base_config(tmp_path, **{**SAFE, "IDP_PLUGINS": "plugins.mfa",
                                                name: str(value)}))
    for value in (least, greatest):
        app = create_app(base_config(tmp_path, **{**SAFE, "IDP_PLUGINS": "plugins.mfa",
                                                  name: str(value)}))
        assert app.config[name] == value


@pytest.mark.parametrize(("name", "value"), [
    ("IDP_CLIENT_JWKS_REFETCH_SECONDS", "0"),
    ("IDP_CLIENT_JWKS_CACHE_SECONDS", "10"),  # less than the refetch interval
    ("IDP_CLIENT_JWKS_TIMEOUT", "0"),
    ("IDP_CLIENT_JWKS_TIMEOUT", "120"),
])
def test_client_jwks_fetch_settings_out_of_range_are_refused_by_name(tmp_path, monkeypatch,
                                                                      name, value):
    assert_setting_refused(tmp_path, monkeypatch, name, value)


@pytest.mark.parametrize(("settings", "module"), [
    ({"IDP_REDIS_URL": "redis://127.0.0.1:1/0"}, "redis"),
    ({"SQLALCHEMY_DATABASE_URI": "postgresql://idp@127.0.0.1:1/idp"}, "psycopg"),
])
def test_a_setting_whose_optional_library_is_missing_stops_the_start_naming_the_extra(
        tmp_path, monkeypatch, settings, module):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == module else real(name, *args))
    with pytest.raises(ConfigError, match=r"pip install 'idp\[(redis|postgres)\]'"):
        create_app(base_config(tmp_path, **settings))
