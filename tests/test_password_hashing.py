"""Passwords are hashed with argon2id at the parameters the settings give (by default an OWASP
profile on one core); production refuses parameters weaker than every OWASP profile; a hash
made with other parameters is upgraded at the owner's next sign-in."""

import argon2
import pytest
from argon2 import PasswordHasher

from idp import create_app, passwords
from idp.config import ConfigError
from idp.extensions import db
from idp.models import User
from tests.conftest import (
    PASSWORD,
    PRODUCTION_SETTINGS,
    OidcActions,
    base_config,
    make_user,
)
from tests.test_sign_in_pages import sign_in_page, submit_password

CHEAP = ("IDP_ARGON2_MEMORY_KIB", "IDP_ARGON2_TIME_COST", "IDP_ARGON2_PARALLELISM")


def parameters_of_a_new_hash(app) -> argon2.Parameters:
    with app.app_context():
        return argon2.extract_parameters(passwords.hash_password("a password"))


def test_by_default_passwords_are_hashed_with_19_mib_two_passes_and_one_lane(tmp_path):
    config = {k: v for k, v in base_config(tmp_path).items() if k not in CHEAP}
    made = parameters_of_a_new_hash(create_app(config))
    assert made.type is argon2.Type.ID
    assert (made.memory_cost, made.time_cost, made.parallelism) == (19456, 2, 1)


def test_the_settings_choose_the_parameters(tmp_path):
    app = create_app(base_config(tmp_path, IDP_ARGON2_MEMORY_KIB="2048",
                                 IDP_ARGON2_TIME_COST="3", IDP_ARGON2_PARALLELISM="2"))
    made = parameters_of_a_new_hash(app)
    assert (made.memory_cost, made.time_cost, made.parallelism) == (2048, 3, 2)


@pytest.mark.parametrize(("memory", "passes"), [
    (47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5), (65536, 3)])
def test_production_accepts_each_owasp_profile_and_stronger(tmp_path, memory, passes):
    app = create_app(base_config(tmp_path, **{
        **PRODUCTION_SETTINGS, "IDP_ARGON2_MEMORY_KIB": str(memory),
        "IDP_ARGON2_TIME_COST": str(passes)}))
    assert app.config["IDP_ARGON2_MEMORY_KIB"] == memory


@pytest.mark.parametrize(("memory", "passes"), [
    (47103, 1), (19455, 2), (12287, 3), (12288, 2), (7167, 5), (1024, 1), (7168, 4)])
def test_production_refuses_parameters_weaker_than_every_owasp_profile(tmp_path, memory,
                                                                       passes):
    with pytest.raises(ConfigError, match="IDP_ARGON2_MEMORY_KIB and IDP_ARGON2_TIME_COST"):
        create_app(base_config(tmp_path, **{
            **PRODUCTION_SETTINGS, "IDP_ARGON2_MEMORY_KIB": str(memory),
            "IDP_ARGON2_TIME_COST": str(passes)}))


@pytest.mark.parametrize(("name", "value"), [
    ("IDP_ARGON2_PARALLELISM", "0"), ("IDP_ARGON2_TIME_COST", "0"),
    ("IDP_ARGON2_MEMORY_KIB", "7"), ("IDP_ARGON2_MEMORY_KIB", "lots")])
def test_parameters_argon2_cannot_use_are_refused_by_name(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        create_app(base_config(tmp_path, **{name: value}))


def test_a_parameter_from_the_environment_is_checked_too(tmp_path, monkeypatch):
    config = {k: v for k, v in base_config(tmp_path).items() if k not in CHEAP}
    monkeypatch.setenv("IDP_ARGON2_TIME_COST", "0")
    with pytest.raises(ConfigError, match="IDP_ARGON2_TIME_COST"):
        create_app(config)


def test_memory_below_8_kib_per_lane_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="IDP_ARGON2_MEMORY_KIB"):
        create_app(base_config(tmp_path, IDP_ARGON2_MEMORY_KIB="16", IDP_ARGON2_PARALLELISM="4"))


def test_a_hash_of_the_former_default_is_upgraded_at_the_next_sign_in(oidc, rp):
    user = make_user("dora")
    former = PasswordHasher(memory_cost=65536, time_cost=3, parallelism=4).hash(PASSWORD)
    user.password_hash = former
    db.session.commit()
    assert oidc.sign_in(rp[0], username="dora")["code"]
    db.session.expire_all()
    upgraded = db.session.get(User, user.id).password_hash
    made = argon2.extract_parameters(upgraded)
    assert (made.memory_cost, made.time_cost, made.parallelism) == (1024, 1, 1)  # the app's
    assert passwords.verify_password(upgraded, PASSWORD)


# --- a refusal costs the same for every account --------------------------------------------


@pytest.fixture
def verified_parameters(monkeypatch) -> list[tuple[int, int, int]]:
    """The argon2id parameters of every verification from now on."""
    seen: list[tuple[int, int, int]] = []
    real = PasswordHasher.verify

    def verify(self, hash, password):
        made = argon2.extract_parameters(hash)
        seen.append((made.memory_cost, made.time_cost, made.parallelism))
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", verify)
    return seen


CURRENT = (1024, 1, 1)  # the tests' settings
EARLIER = (2048, 2, 1)


def refused_with(oidc, rp, username, verified) -> list[tuple[int, int, int]]:
    verified.clear()
    page = submit_password(oidc, sign_in_page(oidc, rp[0]), username, "not the password")
    assert page.status_code == 400
    return sorted(verified)


def test_a_refused_password_costs_the_same_for_unknown_current_and_earlier_hashes(
        oidc, rp, app, verified_parameters):
    make_user("current")
    earlier = make_user("earlier")
    earlier.password_hash = PasswordHasher(memory_cost=EARLIER[0], time_cost=EARLIER[1],
                                           parallelism=EARLIER[2]).hash(PASSWORD)
    db.session.commit()
    for username in ("nobody", "current", "earlier"):
        assert refused_with(oidc, rp, username, verified_parameters) == [CURRENT, EARLIER]


def test_once_no_earlier_hash_is_left_a_refusal_costs_one_verification(
        oidc, rp, app, verified_parameters):
    earlier = make_user("earlier")
    earlier.password_hash = PasswordHasher(memory_cost=EARLIER[0], time_cost=EARLIER[1],
                                           parallelism=EARLIER[2]).hash(PASSWORD)
    db.session.commit()
    assert refused_with(oidc, rp, "nobody", verified_parameters) == [CURRENT, EARLIER]
    assert OidcActions(app.test_client()).sign_in(rp[0], username="earlier")["code"]
    app.extensions.pop("idp.other_password_parameters")  # as after the recheck time
    assert refused_with(oidc, rp, "nobody", verified_parameters) == [CURRENT]
    assert refused_with(oidc, rp, "earlier", verified_parameters) == [CURRENT]


def test_a_stored_value_that_is_no_argon2_hash_does_not_hide_earlier_parameters(
        oidc, rp, app, verified_parameters):
    broken = make_user("broken")
    broken.password_hash = "!not-an-argon2-hash"
    earlier = make_user("earlier")
    earlier.password_hash = PasswordHasher(memory_cost=EARLIER[0], time_cost=EARLIER[1],
                                           parallelism=EARLIER[2]).hash(PASSWORD)
    db.session.commit()
    assert refused_with(oidc, rp, "nobody", verified_parameters) == [CURRENT, EARLIER]
