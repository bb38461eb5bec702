"""The encryption key: derived with HKDF from ``IDP_ENCRYPTION_KEY``, named in every value it
encrypts, rotated with ``IDP_ENCRYPTION_OLD_KEYS`` (still decrypting) and ``idp keys
reencrypt`` (moving what is stored), while values stored before key ids still decrypt."""

from __future__ import annotations

import base64
import hashlib
from contextlib import contextmanager

import pyotp
import pytest
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from idp import create_app, crypto
from idp.extensions import db
from idp.models import SigningKey
from idp.oauth import keys
from plugins.mfa.models import MfaFactor
from tests.conftest import base_config, make_user

KEY_A = "first-encryption-key-0123456789-abcdefghijklmnop"
KEY_B = "second-encryption-key-0123456789-abcdefghijklmno"
KEY_C = "a-third-key-nobody-configured-0123456789-abcdefgh"


@pytest.fixture
def app_config():
    return {"IDP_PLUGINS": "plugins.mfa", "IDP_ENCRYPTION_KEY": KEY_A}


@contextmanager
def instance(tmp_path, **settings):
    """Another application on the same database (as after a restart with new settings)."""
    other = create_app(base_config(tmp_path, IDP_PLUGINS="plugins.mfa", **settings))
    with other.app_context():
        try:
            yield other
        finally:
            db.session.remove()
            db.engine.dispose()


def hkdf_fernet(material: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"idp encryption key v1").derive(material.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def stored_before_key_ids(material: str, text: str) -> str:
    """A value as the IdP stored it before key ids: a Fernet token under SHA-256."""
    key = hashlib.sha256(f"idp:encryption:{material}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key)).encrypt(text.encode()).decode()


def totp_factor(username: str, value: str) -> MfaFactor:
    user = make_user(username)
    row = MfaFactor(user_id=user.id, kind="totp", secret_encrypted=value)
    db.session.add(row)
    db.session.commit()
    return row


def test_a_value_encrypted_now_names_its_key_derived_with_hkdf(app):
    value = crypto.encrypt("JBSWY3DPEHPK3PXP")
    version, kid, token = value.split(".", 2)
    assert version == "v1" and kid == crypto.keyring().current.kid
    assert hkdf_fernet(KEY_A).decrypt(token.encode()) == b"JBSWY3DPEHPK3PXP"
    assert kid not in KEY_A and len(kid) == 8


def test_values_stored_before_key_ids_still_decrypt(app, tmp_path):
    assert crypto.decrypt(stored_before_key_ids(KEY_A, "kept")) == "kept"
    secret_key = app.config["SECRET_KEY"]
    with instance(tmp_path, IDP_ENCRYPTION_KEY=""):  # development: from the secret key
        assert crypto.decrypt(stored_before_key_ids(secret_key, "dev")) == "dev"
        assert hkdf_fernet(secret_key).decrypt(crypto.encrypt("x").split(".", 2)[2].encode())


def test_after_a_rotation_the_old_key_still_decrypts_and_only_the_new_one_encrypts(
        app, tmp_path):
    under_a = crypto.encrypt("secret")
    old_keys = f" {KEY_C}, {KEY_A}"  # spaces around the commas are ignored
    with instance(tmp_path, IDP_ENCRYPTION_KEY=KEY_B, IDP_ENCRYPTION_OLD_KEYS=old_keys):
        assert crypto.decrypt(under_a) == "secret"
        under_b = crypto.encrypt("secret")
        assert crypto.is_current(under_b) and not crypto.is_current(under_a)
        assert under_b.split(".")[1] != under_a.split(".")[1]
    with instance(tmp_path, IDP_ENCRYPTION_KEY=KEY_B), pytest.raises(InvalidToken):
        crypto.decrypt(under_a)
    with pytest.raises(InvalidToken):  # the first key never had the second one
        crypto.decrypt(under_b)


def test_plugins_declare_their_encrypted_columns(app, tmp_path):
    columns = app.extensions["idp.registry"].encrypted_columns
    assert MfaFactor.secret_encrypted in columns
    assert SigningKey.private_jwk_encrypted in columns
    core_only = create_app(base_config(tmp_path, IDP_PLUGINS=""))
    assert core_only.extensions["idp.registry"].encrypted_columns == [
        SigningKey.private_jwk_encrypted]


def test_keys_reencrypt_moves_every_stored_secret_to_the_current_key(app, tmp_path):
    secret = pyotp.random_base32()
    signing_key = keys.active_key()  # encrypted with KEY_A
    private = keys.private_key(signing_key).as_dict(private=True)
    totp_factor("alice", crypto.encrypt(secret))
    totp_factor("bob", stored_before_key_ids(KEY_A, secret))

    with instance(tmp_path, IDP_ENCRYPTION_KEY=KEY_B, IDP_ENCRYPTION_OLD_KEYS=KEY_A) as rotated:
        result = rotated.test_cli_runner().invoke(args=["keys", "reencrypt"])
        assert result.exit_code == 0, result.output
        assert "signing_keys.private_jwk_encrypted\t1" in result.output
        assert "mfa_factors.secret_encrypted\t2" in result.output
        assert "Moved 3 encrypted values" in result.output
        again = rotated.test_cli_runner().invoke(args=["keys", "reencrypt"])
        assert "Moved 0 encrypted values" in again.output

    with instance(tmp_path, IDP_ENCRYPTION_KEY=KEY_B):  # the old key is gone now
        values = db.session.scalars(db.select(MfaFactor.secret_encrypted)).all()
        assert [crypto.decrypt(v) for v in values] == [secret, secret]
        assert all(crypto.is_current(v) for v in values)
        row = db.session.scalar(db.select(SigningKey))
        assert crypto.is_current(row.private_jwk_encrypted)
        assert keys.private_key(row).as_dict(private=True) == private


def test_keys_reencrypt_changes_nothing_when_a_value_cannot_be_decrypted(app, tmp_path):
    keys.active_key()
    kept = totp_factor("alice", crypto.encrypt("kept"))
    with instance(tmp_path, IDP_ENCRYPTION_KEY=KEY_C):
        foreign = crypto.encrypt("foreign")
    stray = totp_factor("bob", foreign)
    before = dict(db.session.execute(db.select(MfaFactor.id, MfaFactor.secret_encrypted)).all())

    with instance(tmp_path, IDP_ENCRYPTION_KEY=KEY_B, IDP_ENCRYPTION_OLD_KEYS=KEY_A) as rotated:
        result = rotated.test_cli_runner().invoke(args=["keys", "reencrypt"])
        assert result.exit_code != 0
        assert f"mfa_factors.secret_encrypted of row {stray.id}" in result.output
        assert "Nothing was changed" in result.output

    db.session.expire_all()
    assert dict(db.session.execute(
        db.select(MfaFactor.id, MfaFactor.secret_encrypted)).all()) == before
    assert crypto.decrypt(before[kept.id]) == "kept"
    # The signing key, read before the stray value, is still under the first key too.
    assert crypto.is_current(db.session.scalar(db.select(SigningKey.private_jwk_encrypted)))
