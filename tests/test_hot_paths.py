"""The endpoints relying parties call most do no needless work: the SQL statements each
request issues (discovery, JWKS, the token endpoint, userinfo), and exactly one password hash
checked per sign-in. ``make bench`` measures their speed; these tests keep their shape."""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from idp.extensions import db
from tests.conftest import basic_auth
from tests.token_helpers import issue_tokens, refresh, service_client, userinfo


@contextmanager
def statements():
    """The SQL statements sent to the database inside the block."""
    seen: list[str] = []

    def note(_connection, _cursor, statement, *_args):
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def kinds(seen: list[str]) -> list[str]:
    """SELECT, INSERT or UPDATE and the table, for each statement."""
    out = []
    for statement in seen:
        verb = statement.split()[0].upper()
        table = re.search(r"(?:FROM|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)
        out.append(f"{verb} {table.group(1) if table else '?'}")
    return out


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/jwks.json"])
def test_discovery_and_the_jwks_are_answered_without_a_database_query(client, path):
    assert client.get(path).status_code == 200  # the first one may create the signing key
    with statements() as seen:
        response = client.get(path)
    assert response.status_code == 200
    assert seen == []


def test_userinfo_reads_the_token_and_its_user_in_one_query(client, oidc, rp, alice):
    tokens = issue_tokens(oidc, *rp)
    with statements() as seen:
        response = userinfo(client, tokens["access_token"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["sub"] == alice.sub
    assert len(seen) == 1, seen


def test_client_credentials_reads_the_client_and_inserts_the_token(client, app):
    service, secret = service_client()
    headers = basic_auth(service.client_id, secret)
    with statements() as seen:
        response = client.post("/token", data={"grant_type": "client_credentials"},
                               headers=headers)
    assert response.status_code == 200, response.get_json()
    assert kinds(seen) == ["SELECT clients", "INSERT tokens"]


def test_a_refresh_reads_the_client_and_the_token_then_rotates_it_in_two_writes(
        client, oidc, rp, alice):
    tokens = issue_tokens(oidc, *rp)
    with statements() as seen:
        response = refresh(client, *rp, tokens["refresh_token"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["refresh_token"] != tokens["refresh_token"]
    assert kinds(seen) == ["SELECT clients", "SELECT tokens", "INSERT tokens", "UPDATE tokens"]


def test_a_sign_in_and_its_code_exchange_check_one_password_hash(oidc, rp, alice,
                                                                  password_hash_calls):
    tokens = issue_tokens(oidc, *rp)
    assert tokens["id_token"] and tokens["refresh_token"]
    assert password_hash_calls == {"verify": 1, "hash": 0}


def test_the_session_cookie_is_written_only_when_it_changes(client, oidc, rp):
    sign_in_page = oidc.authorize(rp[0]).headers["Location"]
    first = client.get(sign_in_page)  # the form's CSRF token goes into the session
    assert any(h.startswith("idp_session=") for h in first.headers.getlist("Set-Cookie"))
    again = client.get(sign_in_page)
    assert again.status_code == 200
    assert not any(h.startswith("idp_session=") for h in again.headers.getlist("Set-Cookie"))


def test_the_sign_in_page_reads_its_pending_request_with_its_client_in_one_query(
        client, oidc, rp):
    sign_in_page = oidc.authorize(rp[0]).headers["Location"]
    with statements() as seen:
        page = client.get(sign_in_page)
    assert page.status_code == 200 and rp[0].display_name in page.get_data(as_text=True)
    assert kinds(seen) == ["SELECT pending_authorizations"]
