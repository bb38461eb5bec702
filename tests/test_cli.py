"""The ``idp`` admin command: clients, users, keys, demo data, and the real console script."""

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from idp.extensions import db
from idp.models import AuditEvent, Client, Consent, SigningKey, TermsAcceptance, Token, User
from idp.oauth import keys
from idp.timeutil import utcnow
from tests.conftest import PASSWORD, basic_auth, make_user

URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


# --- helpers -----------------------------------------------------------------------------


def invoke(runner, *args, input=None):
    """Run ``idp ARGS`` and insist that it succeeded."""
    result = runner.invoke(args=list(args), input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def invoke_json(runner, *args, input=None):
    return json.loads(invoke(runner, *args, input=input).output)


def assert_refused(runner, *args, says: str, input=None):
    """The command fails with a clear message and a non-zero status, never a traceback."""
    result = runner.invoke(args=list(args), input=input)
    assert result.exit_code != 0, result.output
    # Click's own errors end in SystemExit; anything else would be a crash.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception)
    )
    assert "Traceback" not in result.output
    assert says.lower() in result.output.lower(), result.output
    return result


def stored(client_id) -> Client:
    db.session.expire_all()
    return db.session.scalar(db.select(Client).filter_by(client_id=client_id))


def client_credentials(http, client_id, secret, **extra):
    data = {"grant_type": "client_credentials", **extra}
    return http.post("/token", data=data, headers=basic_auth(client_id, secret))


def create_service(runner, client_id="svc"):
    return invoke_json(runner, "clients", "create", "--name", "Service", "--client-id",
                       client_id, "--grant-type", "client_credentials", "--scope", "profile")


@pytest.fixture
def jwks_file(tmp_path):
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, auto_kid=True)
    path = tmp_path / "client-jwks.json"
    path.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return path


@pytest.fixture
def terms_file(tmp_path):
    path = tmp_path / "terms.txt"
    path.write_text("Be nice to the mail carrier.")
    return path


# --- clients create ----------------------------------------------------------------------


def test_clients_create_with_every_option_prints_the_client_as_json(runner, terms_file):
    data = invoke_json(
        runner, "clients", "create", "--name", "Shipping", "--client-id", "shipping",
        "--redirect-uri", "https://ship.example/cb", "--redirect-uri", "http://127.0.0.1:8000/cb",
        "--post-logout-redirect-uri", "https://ship.example/bye",
        "--backchannel-logout-uri", "https://ship.example/bcl",
        "--auth-method", "client_secret_post",
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--scope", "openid email", "--require-pkce", "--display-name", "Click-N-Ship",
        "--description", "Print labels.", "--terms-file", str(terms_file),
        "--help-contact", "call 555-0100", "--json",
    )
    assert data["client_id"] == "shipping"
    assert data["name"] == "Shipping"
    assert data["redirect_uris"] == ["https://ship.example/cb", "http://127.0.0.1:8000/cb"]
    assert data["post_logout_redirect_uris"] == ["https://ship.example/bye"]
    assert data["backchannel_logout_uri"] == "https://ship.example/bcl"
    assert data["token_endpoint_auth_method"] == "client_secret_post"
    assert data["grant_types"] == ["authorization_code", "refresh_token"]
    assert data["scope"] == "openid email"
    assert data["require_pkce"] is True
    assert data["display_name"] == "Click-N-Ship"
    assert data["description"] == "Print labels."
    assert data["terms"] is True
    assert data["help_contact"] == "call 555-0100"
    row = stored("shipping")
    assert row.terms_text == "Be nice to the mail carrier."
    assert row.require_pkce is True
    assert row.auth_method == "client_secret_post"


def test_clients_create_prints_a_256_bit_secret_stored_only_as_its_digest(runner):
    data = invoke_json(runner, "clients", "create", "--name", "App", "--redirect-uri",
                       "https://app.example/cb")
    secret = data["client_secret"]
    assert len(secret) >= 43 and URLSAFE.fullmatch(secret)
    row = stored(data["client_id"])
    assert row.client_secret_digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in row.client_secret_digest
    raw = db.session.execute(
        db.text("SELECT client_secret_digest FROM clients WHERE client_id = :id"),
        {"id": data["client_id"]},
    ).scalar_one()
    assert raw != secret and secret not in raw
    assert row.check_client_secret(secret)


def test_clients_create_gives_different_random_ids_and_secrets(runner):
    first = invoke_json(runner, "clients", "create", "--name", "A", "--redirect-uri",
                        "https://a.example/cb")
    second = invoke_json(runner, "clients", "create", "--name", "B", "--redirect-uri",
                         "https://b.example/cb")
    assert first["client_id"] != second["client_id"]
    assert first["client_secret"] != second["client_secret"]


def test_client_secret_is_shown_only_at_creation(runner):
    data = invoke_json(runner, "clients", "create", "--name", "App", "--redirect-uri",
                       "https://app.example/cb")
    shown = invoke(runner, "clients", "show", data["client_id"]).output
    listed = invoke(runner, "clients", "list").output
    assert data["client_secret"] not in shown
    assert data["client_secret"] not in listed
    assert "client_secret" not in json.loads(shown)


def test_created_service_client_gets_tokens_with_client_credentials(runner, client):
    data = create_service(runner)
    assert data["grant_types"] == ["client_credentials"]
    response = client_credentials(client, "svc", data["client_secret"], scope="profile")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["access_token"]
    assert client_credentials(client, "svc", "wrong-secret").status_code == 401


def test_created_code_flow_client_completes_a_sign_in(runner, oidc, alice):
    data = invoke_json(runner, "clients", "create", "--name", "Web", "--client-id", "web",
                       "--redirect-uri", "https://web.example/cb")
    rp = stored("web")
    params = oidc.sign_in(rp)
    response = oidc.token(rp, data["client_secret"], params["code"])
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["id_token"]


def test_private_key_jwt_client_gets_no_secret(runner, jwks_file):
    data = invoke_json(runner, "clients", "create", "--name", "Signed", "--redirect-uri",
                       "https://signed.example/cb", "--auth-method", "private_key_jwt",
                       "--jwks-file", str(jwks_file))
    assert "client_secret" not in data
    assert data["jwks"]["keys"][0]["kty"] == "RSA"
    assert stored(data["client_id"]).client_secret_digest is None


def test_public_client_gets_no_secret_and_requires_pkce(runner):
    data = invoke_json(runner, "clients", "create", "--name", "SPA", "--redirect-uri",
                       "https://spa.example/cb", "--auth-method", "none")
    assert "client_secret" not in data
    assert data["require_pkce"] is True
    assert stored(data["client_id"]).client_secret_digest is None


# --- clients: bad input ------------------------------------------------------------------


@pytest.mark.parametrize("uri", [
    "/relative/cb", "ship.example/cb", "https://ship.example/cb#frag", "javascript:alert(1)",
    "ftp://ship.example/cb", "https://", "https://ship example/cb",
])
def test_clients_create_refuses_a_bad_redirect_uri(runner, uri):
    assert_refused(runner, "clients", "create", "--name", "Bad", "--redirect-uri", uri,
                   says="--redirect-uri")
    assert db.session.scalar(db.select(Client.id)) is None


def test_clients_create_refuses_a_bad_post_logout_or_backchannel_uri(runner):
    base = ["clients", "create", "--name", "Bad", "--redirect-uri", "https://ok.example/cb"]
    assert_refused(runner, *base, "--post-logout-redirect-uri", "nope",
                   says="--post-logout-redirect-uri")
    assert_refused(runner, *base, "--backchannel-logout-uri", "nope",
                   says="--backchannel-logout-uri")


def test_clients_create_refuses_private_key_jwt_without_keys(runner):
    assert_refused(runner, "clients", "create", "--name", "Signed", "--redirect-uri",
                   "https://signed.example/cb", "--auth-method", "private_key_jwt",
                   says="--jwks")
    assert db.session.scalar(db.select(Client.id)) is None


def test_clients_create_refuses_a_jwks_file_that_is_not_a_public_key_set(runner, tmp_path):
    from joserfc.jwk import RSAKey

    base = ["clients", "create", "--name", "Signed", "--redirect-uri",
            "https://signed.example/cb", "--auth-method", "private_key_jwt", "--jwks-file"]
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    assert_refused(runner, *base, str(garbage), says="JSON Web Key Set")
    empty = tmp_path / "empty.json"
    empty.write_text('{"keys": []}')
    assert_refused(runner, *base, str(empty), says="JSON Web Key Set")
    broken = tmp_path / "broken.json"
    broken.write_text('{"keys": [{"kty": "RSA", "n": "x"}]}')
    assert_refused(runner, *base, str(broken), says="JSON Web Key Set")
    private = tmp_path / "private.json"
    key = RSAKey.generate_key(2048, auto_kid=True)
    private.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    assert_refused(runner, *base, str(private), says="private")
    assert db.session.scalar(db.select(Client.id)) is None


def test_clients_create_refuses_jwks_uri_and_jwks_file_together(runner, jwks_file):
    assert_refused(runner, "clients", "create", "--name", "Signed", "--redirect-uri",
                   "https://signed.example/cb", "--auth-method", "private_key_jwt",
                   "--jwks-file", str(jwks_file), "--jwks-uri", "https://signed.example/jwks",
                   says="not both")


def test_clients_create_refuses_an_unknown_scope(runner):
    assert_refused(runner, "clients", "create", "--name", "App", "--redirect-uri",
                   "https://app.example/cb", "--scope", "openid admin", says="Unknown scope")


def test_clients_create_refuses_an_unknown_auth_method_or_grant_type(runner):
    base = ["clients", "create", "--name", "App", "--redirect-uri", "https://app.example/cb"]
    assert_refused(runner, *base, "--auth-method", "client_secret_jwt", says="--auth-method")
    assert_refused(runner, *base, "--grant-type", "password", says="--grant-type")


def test_clients_create_refuses_a_duplicate_client_id(runner):
    create_service(runner, "dup")
    before = stored("dup").client_secret_digest
    assert_refused(runner, "clients", "create", "--name", "Other", "--client-id", "dup",
                   "--grant-type", "client_credentials", says="exists already")
    assert stored("dup").client_secret_digest == before
    assert stored("dup").name == "Service"


@pytest.mark.parametrize("client_id", ["a" * 65, "has space", "colon:id", "slash/id", ""])
def test_clients_create_refuses_a_client_id_that_cannot_be_used(runner, client_id):
    assert_refused(runner, "clients", "create", "--name", "App", "--client-id", client_id,
                   "--grant-type", "client_credentials", says="--client-id")


def test_clients_create_refuses_a_code_flow_client_without_redirect_uri(runner):
    assert_refused(runner, "clients", "create", "--name", "App", says="--redirect-uri")


def test_clients_create_refuses_a_public_client_credentials_client(runner):
    assert_refused(runner, "clients", "create", "--name", "App", "--auth-method", "none",
                   "--grant-type", "client_credentials", says="client_credentials")


def test_clients_create_refuses_a_terms_file_that_is_not_text(runner, tmp_path):
    binary = tmp_path / "terms.bin"
    binary.write_bytes(b"\xff\xfe\xd0\x00binary")
    assert_refused(runner, "clients", "create", "--name", "App", "--redirect-uri",
                   "https://app.example/cb", "--terms-file", str(binary), says="--terms-file")


def test_clients_create_refuses_a_missing_name(runner):
    assert_refused(runner, "clients", "create", "--redirect-uri", "https://app.example/cb",
                   says="--name")


@pytest.mark.parametrize("command", [
    ["clients", "show"], ["clients", "delete"], ["clients", "rotate-secret"],
    ["clients", "update", "--name", "X"],
])
def test_clients_commands_refuse_an_unknown_client(runner, command):
    args = [*command[:2], "ghost", *command[2:]]
    assert_refused(runner, *args, says="No client with id 'ghost'")


# --- clients update / list / show / delete / rotate-secret -------------------------------


def test_clients_update_changes_only_the_options_given(runner, terms_file, client):
    created = invoke_json(
        runner, "clients", "create", "--name", "Shipping", "--client-id", "shipping",
        "--redirect-uri", "https://ship.example/cb", "--grant-type", "authorization_code",
        "--grant-type", "client_credentials", "--post-logout-redirect-uri",
        "https://ship.example/bye", "--backchannel-logout-uri", "https://ship.example/bcl",
        "--scope", "openid email", "--require-pkce", "--display-name", "Click-N-Ship",
        "--description", "Print labels.", "--terms-file", str(terms_file),
        "--help-contact", "call 555-0100",
    )
    before = {k: v for k, v in created.items() if k != "client_secret"}
    updated = invoke_json(runner, "clients", "update", "shipping", "--display-name", "CNS")
    assert "client_secret" not in updated
    assert updated == {**before, "display_name": "CNS"}
    assert stored("shipping").terms_text == "Be nice to the mail carrier."
    # The secret was not touched.
    response = client_credentials(client, "shipping", created["client_secret"])
    assert response.status_code == 200, response.get_json()

    updated = invoke_json(runner, "clients", "update", "shipping", "--redirect-uri",
                          "https://ship.example/new", "--no-require-pkce")
    assert updated == {**before, "display_name": "CNS",
                       "redirect_uris": ["https://ship.example/new"], "require_pkce": False}


def test_clients_update_refusal_leaves_the_client_unchanged(runner):
    create_service(runner)
    assert_refused(runner, "clients", "update", "svc", "--auth-method", "private_key_jwt",
                   says="--jwks")
    assert_refused(runner, "clients", "update", "svc", "--scope", "openid root",
                   says="Unknown scope")
    row = stored("svc")
    assert row.auth_method == "client_secret_basic"
    assert row.scope == "profile"
    assert row.client_secret_digest


def test_clients_update_switching_between_secret_methods_keeps_the_secret(runner, client):
    data = create_service(runner)
    updated = invoke_json(runner, "clients", "update", "svc", "--auth-method",
                          "client_secret_post")
    assert "client_secret" not in updated
    response = client.post("/token", data={"grant_type": "client_credentials",
                                           "client_id": "svc",
                                           "client_secret": data["client_secret"]})
    assert response.status_code == 200, response.get_json()


def test_clients_update_to_a_secret_method_prints_a_new_secret(runner, client, jwks_file):
    invoke_json(runner, "clients", "create", "--name", "Signed", "--client-id", "signed",
                "--grant-type", "client_credentials", "--auth-method", "private_key_jwt",
                "--jwks-file", str(jwks_file))
    updated = invoke_json(runner, "clients", "update", "signed", "--auth-method",
                          "client_secret_basic")
    assert len(updated["client_secret"]) >= 43
    response = client_credentials(client, "signed", updated["client_secret"])
    assert response.status_code == 200, response.get_json()
    back = invoke_json(runner, "clients", "update", "signed", "--auth-method",
                       "private_key_jwt")
    assert "client_secret" not in back
    assert stored("signed").client_secret_digest is None


def test_clients_list_and_show_print_json(runner):
    create_service(runner, "one")
    create_service(runner, "two")
    listed = invoke_json(runner, "clients", "list")
    assert [c["client_id"] for c in listed] == ["one", "two"]
    shown = invoke_json(runner, "clients", "show", "two")
    assert shown == listed[1]
    assert shown["token_endpoint_auth_method"] == "client_secret_basic"


def test_clients_delete_removes_the_client_and_revokes_its_tokens(runner, client, oidc, rp,
                                                                  alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client)
    access = oidc.token(app_client, secret, params["code"]).get_json()["access_token"]
    bearer = {"Authorization": "Bearer " + access}
    assert client.get("/userinfo", headers=bearer).status_code == 200
    db.session.add(Consent(user_id=alice.id, client_id="rp-app", scope="offline_access"))
    db.session.commit()

    output = invoke(runner, "clients", "delete", "rp-app").output
    assert "rp-app" in output
    assert stored("rp-app") is None
    tokens = db.session.scalars(db.select(Token).filter_by(client_id="rp-app")).all()
    assert tokens and all(t.revoked_at is not None for t in tokens)
    assert client.get("/userinfo", headers=bearer).status_code == 401
    assert db.session.scalar(db.select(Consent.id).filter_by(client_id="rp-app")) is None
    assert db.session.scalar(db.select(TermsAcceptance.id).filter_by(client_id="rp-app")) is None
    assert_refused(runner, "clients", "show", "rp-app", says="No client")


def test_clients_rotate_secret_replaces_the_old_secret(runner, client):
    old = create_service(runner)["client_secret"]
    rotated = invoke_json(runner, "clients", "rotate-secret", "svc")
    new = rotated["client_secret"]
    assert rotated["client_id"] == "svc"
    assert new != old and len(new) >= 43
    assert stored("svc").client_secret_digest == hashlib.sha256(new.encode()).hexdigest()
    assert client_credentials(client, "svc", old).status_code == 401
    assert client_credentials(client, "svc", new).status_code == 200


def test_clients_rotate_secret_refuses_a_client_without_secret(runner):
    invoke_json(runner, "clients", "create", "--name", "SPA", "--client-id", "spa",
                "--redirect-uri", "https://spa.example/cb", "--auth-method", "none")
    assert_refused(runner, "clients", "rotate-secret", "spa", says="does not use a client secret")
    assert stored("spa").client_secret_digest is None


def test_client_admin_commands_are_audited_without_secrets(runner):
    secrets = [create_service(runner)["client_secret"]]
    invoke(runner, "clients", "update", "svc", "--display-name", "Svc")
    secrets.append(invoke_json(runner, "clients", "rotate-secret", "svc")["client_secret"])
    invoke(runner, "clients", "delete", "svc")
    events = db.session.scalars(
        db.select(AuditEvent).filter_by(client_id="svc").order_by(AuditEvent.id)
    ).all()
    assert [e.event for e in events] == ["client_created", "client_updated",
                                         "client_secret_rotated", "client_deleted"]
    trail = json.dumps([e.detail for e in events])
    assert not any(secret in trail for secret in secrets)
    assert "display_name" in trail


# --- users -------------------------------------------------------------------------------


def test_users_create_reads_the_password_from_stdin(runner, oidc, rp):
    out = invoke_json(runner, "users", "create", "--username", "bob", "--email",
                      "bob@example.com", "--phone", "+12025550143", "--password-stdin",
                      input="a long enough passphrase\n")
    assert "password" not in out
    user = db.session.scalar(db.select(User).filter_by(username="bob"))
    assert user.email == "bob@example.com" and user.phone == "+12025550143"
    assert "a long enough passphrase" not in user.password_hash
    assert oidc.sign_in(rp[0], username="bob", password="a long enough passphrase")["code"]


def test_users_create_refuses_a_short_password_from_stdin(runner):
    assert_refused(runner, "users", "create", "--username", "bob", "--email", "b@example.com",
                   "--password-stdin", input="short\n", says="at least 8")
    assert db.session.scalar(db.select(User.id)) is None


def test_users_create_keeps_the_given_creation_date(runner):
    out = invoke_json(runner, "users", "create", "--username", "old", "--email",
                      "old@example.com", "--created-at", "2024-05-01")
    assert out["created_at"].startswith("2024-05-01")
    user = db.session.scalar(db.select(User).filter_by(username="old"))
    assert user.created_at == datetime(2024, 5, 1)


def test_users_create_refuses_a_malformed_creation_date(runner):
    assert_refused(runner, "users", "create", "--username", "old", "--email",
                   "old@example.com", "--created-at", "01/05/2024", says="--created-at")


def test_users_create_prints_a_random_password_when_none_is_given(runner, oidc, rp):
    first = invoke_json(runner, "users", "create", "--username", "carol", "--email",
                        "carol@example.com")
    second = invoke_json(runner, "users", "create", "--username", "dave", "--email",
                         "dave@example.com")
    assert len(first["password"]) >= 12
    assert first["password"] != second["password"]
    assert first["sub"] != second["sub"]
    assert oidc.sign_in(rp[0], username="carol", password=first["password"])["code"]


def test_users_create_refuses_a_taken_username(runner, alice):
    assert_refused(runner, "users", "create", "--username", "alice", "--email",
                   "other@example.com", says="taken")
    assert db.session.scalar(db.select(db.func.count(User.id))) == 1


def test_usernames_are_case_sensitive(runner, alice):
    out = invoke_json(runner, "users", "create", "--username", "Alice", "--email",
                      "big-alice@example.com")
    assert out["username"] == "Alice"
    names = db.session.scalars(db.select(User.username).order_by(User.id)).all()
    assert names == ["alice", "Alice"]


@pytest.mark.parametrize("args, says", [
    (["--username", " spaced", "--email", "s@example.com"], "--username"),
    (["--username", "tab\tname", "--email", "s@example.com"], "--username"),
    (["--username", "x" * 151, "--email", "s@example.com"], "--username"),
    (["--username", "nomail", "--email", "not-an-email"], "--email"),
    (["--email", "s@example.com"], "--username"),
])
def test_users_create_refuses_bad_input(runner, args, says):
    assert_refused(runner, "users", "create", *args, says=says)
    assert db.session.scalar(db.select(User.id)) is None


def test_users_list_shows_every_account(runner, alice):
    make_user("bob", created_at=datetime(2024, 1, 2))
    lines = invoke(runner, "users", "list").output.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].split("\t")[:2] == ["alice", "alice@example.com"]
    assert lines[1].split("\t")[:3] == ["bob", "bob@example.com", "2024-01-02"]
    assert PASSWORD not in "".join(lines)


# --- keys --------------------------------------------------------------------------------


def test_keys_list_shows_the_active_published_and_retired_keys(runner):
    first = keys.active_key().kid
    invoke(runner, "keys", "rotate")
    second = keys.active_key().kid
    lines = dict(line.split("\t")[:3:2] for line in
                 invoke(runner, "keys", "list").output.strip().splitlines())
    assert lines == {first: "published", second: "active"}
    retired = db.session.scalar(db.select(SigningKey).filter_by(kid=first))
    retired.publish_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    lines = dict(line.split("\t")[:3:2] for line in
                 invoke(runner, "keys", "list").output.strip().splitlines())
    assert lines == {first: "retired", second: "active"}


def test_keys_list_on_a_fresh_database_shows_the_signing_key(runner):
    output = invoke(runner, "keys", "list").output
    assert keys.active_key().kid in output
    assert "active" in output


def test_keys_rotate_prints_the_new_kid_and_how_long_the_old_one_stays(runner):
    old = keys.active_key().kid
    output = invoke(runner, "keys", "rotate").output
    new = keys.active_key().kid
    assert new != old
    assert f"New signing key {new}" in output
    assert f"Key {old} stays published until" in output


# --- demo --------------------------------------------------------------------------------


def test_demo_seed_creates_the_demo_clients_and_users_once(app, runner):
    output = invoke(runner, "demo", "seed").output
    assert "olduser" in output and "newuser" in output
    ids = db.session.scalars(db.select(Client.client_id).order_by(Client.id)).all()
    assert ids == ["click-n-ship", "customer-onboarding-portal", "informed-delivery"]
    users = db.session.scalars(db.select(User).order_by(User.id)).all()
    assert [u.username for u in users] == ["olduser", "newuser"]
    assert users[0].created_at < datetime(2025, 3, 6) <= users[1].created_at
    secrets_file = Path(app.instance_path) / "demo_clients.json"
    assert secrets_file.stat().st_mode & 0o077 == 0
    demo_secrets = json.loads(secrets_file.read_text())
    for client_id in ids:
        assert stored(client_id).check_client_secret(demo_secrets[client_id]["client_secret"])
    assert {stored(i).terms_text is not None for i in ids} == {True, False}

    again = invoke(runner, "demo", "seed").output
    assert "skipped" in again
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 3
    assert db.session.scalar(db.select(db.func.count(User.id))) == 2
    assert json.loads(secrets_file.read_text()) == demo_secrets


def test_demo_seed_that_cannot_write_the_secrets_file_creates_nothing(app, runner, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app.instance_path = str(blocker / "instance")
    assert_refused(runner, "demo", "seed", says="Demo seed failed")
    assert db.session.scalar(db.select(Client.id)) is None
    assert db.session.scalar(db.select(User.id)) is None


def test_demo_seed_leaves_a_database_with_data_alone(runner, alice):
    assert "skipped" in invoke(runner, "demo", "seed").output
    assert db.session.scalar(db.select(Client.id)) is None
    assert db.session.scalar(db.select(db.func.count(User.id))) == 1


def test_demo_client_signs_in_a_demo_user(app, runner, oidc):
    from idp.demo import DEMO_PASSWORD

    invoke(runner, "demo", "seed")
    secret = json.loads((Path(app.instance_path) / "demo_clients.json").read_text())[
        "informed-delivery"]["client_secret"]
    rp = stored("informed-delivery")
    params = oidc.sign_in(rp, username="olduser", password=DEMO_PASSWORD)
    response = oidc.token(rp, secret, params["code"])
    assert response.status_code == 200, response.get_json()


# --- the installed console script ---------------------------------------------------------


def run_idp(*args, env):
    idp = shutil.which("idp", path=str(Path(sys.executable).parent)) or "idp"
    return subprocess.run([idp, *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_console_script_migrates_and_seeds_a_fresh_database(tmp_path):
    instance = tmp_path / "instance" / "not-yet-created"
    env = {
        **os.environ,
        "IDP_INSTANCE_PATH": str(instance),
        "IDP_DATABASE_URL": "sqlite:///" + str(tmp_path / "fresh.db"),
        "IDP_SECRET_KEY": "subprocess-secret-key-0123456789-abcdefghij",
        "IDP_ISSUER": "http://127.0.0.1:5999",
    }
    env.pop("FLASK_APP", None)

    before = run_idp("users", "list", env=env)
    assert before.returncode != 0
    assert "Traceback" not in before.stderr
    assert "idp db upgrade" in before.stderr

    upgraded = run_idp("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    seeded = run_idp("demo", "seed", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "Demo data created" in seeded.stdout
    assert (instance / "demo_clients.json").exists()
    again = run_idp("demo", "seed", env=env)
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stdout
    with sqlite3.connect(tmp_path / "fresh.db") as conn:
        users = [row[0] for row in conn.execute("SELECT username FROM users ORDER BY id")]
        clients = conn.execute("SELECT count(*) FROM clients").fetchone()[0]
    assert users == ["olduser", "newuser"]
    assert clients == 3


def test_users_set_password_changes_it_and_ends_the_users_sessions(runner, oidc, rp, alice):
    from tests.conftest import PASSWORD

    oidc.sign_in(rp[0])
    result = runner.invoke(args=["users", "set-password", "alice", "--password-stdin"],
                           input="another good password\n")
    assert result.exit_code == 0, result.output
    assert '"sessions_ended": 1' in result.output
    page = oidc.http.get(oidc.authorize(rp[0]).headers["Location"])
    assert "Log In" in page.get_data(as_text=True)
    refused = oidc.submit(page, {"username": "alice", "password": PASSWORD}, button="submit")
    assert refused.status_code == 400
    accepted = oidc.submit(refused, {"username": "alice", "password": "another good password"},
                           button="submit")
    assert accepted.status_code == 302


def test_users_set_password_for_an_unknown_user_fails_cleanly(runner, app):
    result = runner.invoke(args=["users", "set-password", "nobody"])
    assert result.exit_code != 0
    assert "No user named 'nobody'" in result.output
    assert "Traceback" not in result.output
