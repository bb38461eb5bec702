"""Every response of the IdP carries a Content-Security-Policy without inline script, the
``form_post`` answer may post only to its client, and production adds HSTS."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from idp import create_app
from idp.extensions import db
from idp.models import PendingAuthorization
from idp.timeutil import utcnow
from tests.conftest import PRODUCTION_SETTINGS, base_config, make_client

ROOT = Path(__file__).resolve().parents[1]
# The core's templates and each plugin's.
TEMPLATE_FOLDERS = [ROOT / "templates", *sorted((ROOT / "plugins").glob("*/templates"))]
HSTS = "max-age=31536000; includeSubDomains"


def directives(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy")
    assert policy, f"no Content-Security-Policy on {response.request.path}"
    out = {}
    for part in policy.split(";"):
        name, *values = part.split()
        assert name not in out, f"{name} given twice: {policy}"
        out[name] = values
    return out


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks.json",
                                  "/healthz", "/no-such-page", "/static/idp.css"])
def test_every_response_carries_a_policy_that_allows_no_inline_script_and_no_framing(client,
                                                                                    path):
    response = client.get(path)
    policy = directives(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_sign_in_page_of_a_client_may_send_the_browser_back_to_that_client_only(
        client, oidc):
    rp, _ = make_client(client_id="shop", redirect_uris=["https://shop.example:8443/cb"],
                        post_logout_redirect_uris=["https://www.shop.example/bye"])
    make_client(client_id="other", redirect_uris=["https://other.example/cb"])
    sign_in = client.get(oidc.authorize(rp).headers["Location"])
    assert sign_in.status_code == 200 and "Log In" in sign_in.get_data(as_text=True)
    assert directives(sign_in)["form-action"] == [
        "'self'", "https://shop.example:8443", "https://www.shop.example"]


def test_an_expired_sign_ins_error_page_belongs_to_no_client(client, oidc):
    rp, _ = make_client(client_id="shop", redirect_uris=["https://shop.example/cb"])
    sign_in = oidc.authorize(rp).headers["Location"]
    pending = db.session.get(PendingAuthorization, sign_in.rsplit("/", 1)[1])
    pending.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    expired = client.get(sign_in)
    assert expired.status_code == 400 and "Sign-in expired" in expired.get_data(as_text=True)
    assert directives(expired)["form-action"] == ["'self'"]


def test_a_request_id_that_is_not_one_line_of_safe_characters_is_replaced(client):
    for given, kept in (("lb-42.a:b", True), ("lb-42\n", False), ("x" * 65, False)):
        for path in ("/healthz", "/.well-known/openid-configuration"):
            answer = client.get(path, environ_overrides={"HTTP_X_REQUEST_ID": given})
            assert (answer.headers["X-Request-ID"] == given) is kept, (path, given)


def test_the_form_post_answer_may_post_to_the_redirect_uri_and_submits_without_inline_script(
        client, oidc, rp, alice):
    response = oidc.follow(oidc.login(oidc.authorize(rp[0], response_mode="form_post")))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<form method="post" action="https://rp.example/cb">' in html
    assert directives(response)["form-action"] == ["'self'", "https://rp.example"]
    assert not re.search(r"\son[a-z]+=", html), "an inline event handler"
    script = re.search(r'<script src="(/static/form_post\.js)" defer></script>', html)
    assert script, html
    served = client.get(script.group(1))
    assert served.status_code == 200
    assert served.mimetype in ("text/javascript", "application/javascript")
    assert "document.forms[0].submit()" in served.get_data(as_text=True)


def test_a_native_apps_private_use_scheme_is_a_form_target_of_its_pages(client, oidc):
    rp, _ = make_client(client_id="native", auth_method="none",
                        redirect_uris=["com.example.app:/oauth2redirect"])
    sign_in = client.get(oidc.authorize(rp).headers["Location"])
    assert directives(sign_in)["form-action"] == [
        "'self'", "com.example.app:", "https://rp.example"]  # and its post-logout URI


def test_pages_outside_an_email_have_no_inline_script_event_handler_or_style():
    found = []
    for folder in TEMPLATE_FOLDERS:
        for path in folder.rglob("*.html"):
            if path.relative_to(folder).parts[0] == "email":  # mail clients, not the IdP
                continue
            text = path.read_text(encoding="utf-8")
            for pattern in (r"<script(?![^>]*\ssrc=)[^>]*>", r"\son[a-z]+\s*=",
                            r"\sstyle\s*=", r"<style"):
                found += [f"{path.relative_to(ROOT)}: {m.group(0)}"
                          for m in re.finditer(pattern, text, re.IGNORECASE)]
    assert len(TEMPLATE_FOLDERS) > 1 and not found, found


def test_production_adds_strict_transport_security(tmp_path, database_url):
    app = create_app(base_config(tmp_path, **PRODUCTION_SETTINGS))
    with app.app_context():
        response = app.test_client().get("/healthz")
        db.session.remove()
    assert response.headers["Strict-Transport-Security"] == HSTS
    assert "Content-Security-Policy" in response.headers


def test_development_sends_no_strict_transport_security(client):
    response = client.get("/healthz")
    assert "Strict-Transport-Security" not in response.headers
    assert "Content-Security-Policy" in response.headers
