"""What operators rely on: health and readiness, request ids, structured logs."""

import io
import json
import logging

import pytest

from idp import create_app
from idp.config import ConfigError
from tests.conftest import base_config


def test_healthz_answers_without_authentication(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_answers_ready_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_readyz_answers_503_without_detail_when_the_database_is_unreachable(tmp_path):
    app = create_app(base_config(
        tmp_path, SQLALCHEMY_DATABASE_URI="sqlite:///" + str(tmp_path / "missing" / "no.db")))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable"}
    assert "sqlite" not in response.get_data(as_text=True).lower()


def test_every_response_carries_a_request_id_and_a_valid_incoming_one_is_kept(client):
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 16
    assert client.get("/healthz", headers={"X-Request-ID": "lb-123.abc"}).headers[
        "X-Request-ID"] == "lb-123.abc"
    hostile = client.get("/healthz", headers={"X-Request-ID": "<script> " + "x" * 100})
    assert hostile.headers["X-Request-ID"].isalnum()


@pytest.fixture
def app_config():
    return {"IDP_LOG_FORMAT": "json"}


def test_json_logs_are_one_object_per_line_with_the_request_id(client, rp, alice, oidc):
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_idp_handler", False))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        oidc.sign_in(rp[0])
        response = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        logging.getLogger("idp.test").info("probe")  # outside a request: request id "-"
    finally:
        handler.setStream(previous)
    assert response.headers["X-Request-ID"] == "trace-42"
    lines = stream.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message", "request_id"} <= set(entries[-1])
    assert any(e["message"].startswith("audit login_succeeded") and e["request_id"] != "-"
               for e in entries)
    assert handler.formatter.__class__.__name__ == "JsonFormatter"


def test_an_unknown_log_format_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="IDP_LOG_FORMAT"):
        create_app(base_config(tmp_path, IDP_LOG_FORMAT="xml"))
