"""The plugin interface, proven with the example plugin in tests/example_plugin.py: a step
in the sign-in pipeline, an acr level, a CLI group, a client setting and a claims provider,
all contributed through ``idp.plugins`` and absent when the plugin is not configured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from idp import create_app
from idp.config import ConfigError
from idp.extensions import db
from idp.models import AuditEvent, Client
from tests.conftest import base_config, install_plugin_distribution, make_client
from tests.example_plugin import ACR_STRONG

NO_PLUGINS = {"IDP_PLUGINS": ""}
ROOT = Path(__file__).resolve().parent.parent
IDP_PACKAGE = ROOT / "idp"


@pytest.fixture
def app_config():
    return {"IDP_PLUGINS": "tests.example_plugin"}


@pytest.fixture
def rp_with_terms(app):
    return make_client(client_id="rp-terms", terms_text="Be kind to the example plugin.")


def path_of(response) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return urlsplit(response.headers["Location"]).path


def id_token_claims(client, oidc, rp, secret, params) -> dict:
    response = oidc.token(rp, secret, params["code"])
    assert response.status_code == 200, response.get_json()
    keyset = KeySet.import_key_set(client.get("/jwks.json").get_json())
    return jwt.decode(response.get_json()["id_token"], keyset).claims


def pass_example_step(client, oidc, response):
    """From the redirect to the example step, press its button; returns the next response."""
    page = client.get(response.headers["Location"])
    assert "Use Your Security Key" in page.get_data(as_text=True)
    return oidc.submit(page, button="submit")


# --- the pipeline step --------------------------------------------------------------------


def test_plugin_step_runs_after_the_password_and_before_the_terms(
    client, oidc, rp_with_terms, alice
):
    app_client, _ = rp_with_terms

    after_password = oidc.login(oidc.authorize(app_client))
    assert path_of(after_password).startswith("/example/step/")

    # The example step sends the browser back through /authorize/resume when it is done.
    after_step = pass_example_step(client, oidc, after_password)
    after_resume = client.get(after_step.headers["Location"])
    assert path_of(after_resume).startswith("/terms/")

    terms = client.get(after_resume.headers["Location"])
    assert "<h1>Terms and Conditions</h1>" in terms.get_data(as_text=True)
    done = oidc.follow(oidc.submit(terms, button="agree"))
    assert oidc.callback_params(done)["code"]


def test_plugin_step_reports_its_reason_to_the_audit_trail(client, oidc, rp, alice):
    oidc.login(oidc.authorize(rp[0]))

    steps = [(e.detail["step"], e.detail["reason"]) for e in db.session.scalars(
        db.select(AuditEvent).filter_by(event="sign_in_step").order_by(AuditEvent.id))]
    assert steps == [("login", "no_session"), ("example", "example_needed")]


def test_plugin_step_is_needed_once_per_sign_in_and_then_the_code_is_issued(
    client, oidc, rp, alice
):
    after_password = oidc.login(oidc.authorize(rp[0]))
    resumed = after_password  # the password page sends the browser on to the step
    done = oidc.follow(pass_example_step(client, oidc, resumed))
    assert oidc.callback_params(done)["code"]


def test_id_token_has_the_plugin_amr_and_the_requested_plugin_acr(client, oidc, rp, alice):
    app_client, secret = rp
    after_password = oidc.login(oidc.authorize(app_client, acr_values=ACR_STRONG))
    resumed = after_password  # the password page sends the browser on to the step
    params = oidc.callback_params(oidc.follow(pass_example_step(client, oidc, resumed)))

    claims = id_token_claims(client, oidc, app_client, secret, params)
    assert claims["amr"] == ["pwd", "hwk", "mfa"]
    assert claims["acr"] == ACR_STRONG


def test_essential_plugin_acr_is_met_after_the_plugin_step(client, oidc, rp, alice):
    app_client, secret = rp
    claims_param = json.dumps({"id_token": {"acr": {"essential": True, "values": [ACR_STRONG]}}})
    after_password = oidc.login(oidc.authorize(app_client, claims=claims_param))
    resumed = after_password  # the password page sends the browser on to the step
    params = oidc.callback_params(oidc.follow(pass_example_step(client, oidc, resumed)))

    assert id_token_claims(client, oidc, app_client, secret, params)["acr"] == ACR_STRONG


def test_plugin_step_under_prompt_none_answers_interaction_required(client, oidc, rp, alice):
    app_client, _ = rp
    after_password = oidc.login(oidc.authorize(app_client))
    assert path_of(after_password).startswith("/example/step/")  # stops at the example step

    answer = oidc.callback_params(oidc.authorize(app_client, prompt="none"))
    assert answer["error"] == "interaction_required"


def test_discovery_lists_the_plugin_acr_value_after_the_core_ones(client):
    values = client.get("/.well-known/openid-configuration").get_json()["acr_values_supported"]
    assert "urn:idp:acr:pwd" in values
    assert ACR_STRONG in values
    assert values.index("urn:idp:acr:pwd") < values.index(ACR_STRONG)


# --- CLI, client settings, claims -------------------------------------------------------------


def test_plugin_cli_group_is_part_of_the_idp_command(runner):
    result = runner.invoke(args=["example", "greet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello from the example plugin"


def test_plugin_client_option_is_accepted_by_clients_create_and_stored(app, runner):
    result = runner.invoke(args=[
        "clients", "create", "--name", "Strong", "--client-id", "strong-app",
        "--redirect-uri", "https://strong.example/cb", "--example-level", "high", "--json",
    ])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["example_level"] == "high"
    row = db.session.scalar(db.select(Client).filter_by(client_id="strong-app"))
    assert row.settings["example_level"] == "high"

    shown = runner.invoke(args=["clients", "show", "strong-app"])
    assert json.loads(shown.output)["example_level"] == "high"


def test_plugin_client_option_has_its_default_and_can_be_updated(app, runner):
    created = runner.invoke(args=[
        "clients", "create", "--name", "Plain", "--client-id", "plain-app",
        "--redirect-uri", "https://plain.example/cb", "--json",
    ])
    assert created.exit_code == 0, created.output
    assert json.loads(created.output)["example_level"] == "low"

    updated = runner.invoke(args=["clients", "update", "plain-app", "--example-level", "high"])
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.output)["example_level"] == "high"
    assert "--example-level" in runner.invoke(args=["clients", "create", "--help"]).output


def test_plugin_client_option_refuses_values_it_does_not_know(runner):
    result = runner.invoke(args=[
        "clients", "create", "--name", "Odd", "--redirect-uri", "https://odd.example/cb",
        "--example-level", "extreme",
    ])
    assert result.exit_code != 0
    assert "extreme" in result.output


def test_plugin_claims_provider_adds_to_userinfo(client, oidc, rp, alice):
    app_client, secret = rp
    after_password = oidc.login(oidc.authorize(app_client, scope="openid profile"))
    resumed = after_password  # the password page sends the browser on to the step
    params = oidc.callback_params(oidc.follow(pass_example_step(client, oidc, resumed)))
    token = oidc.token(app_client, secret, params["code"]).get_json()

    info = client.get("/userinfo",
                      headers={"Authorization": "Bearer " + token["access_token"]}).get_json()
    assert info["sub"] == alice.sub
    assert info["example_badge"] == "badge-alice"


def test_plugin_default_config_is_a_setting_the_environment_can_override(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("IDP_EXAMPLE_GREETING", "hi from the environment")
    app = create_app(base_config(tmp_path, IDP_PLUGINS="tests.example_plugin"))

    assert app.config["IDP_EXAMPLE_GREETING"] == "hi from the environment"
    result = app.test_cli_runner().invoke(args=["example", "greet"])
    assert result.output.strip() == "hi from the environment"


def test_plugin_commands_are_part_of_the_installed_idp_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_PLUGINS="tests.example_plugin", IDP_INSTANCE_PATH=str(tmp_path),
               IDP_SECRET_KEY="x" * 48, PYTHONPATH=str(ROOT))
    idp = Path(sys.executable).parent / "idp"

    def run(*args):
        return subprocess.run([str(idp), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    greeting = run("example", "greet")
    assert greeting.returncode == 0, greeting.stderr
    assert greeting.stdout.strip() == "hello from the example plugin"
    assert "--example-level" in run("clients", "create", "--help").stdout


@pytest.mark.parametrize("spec", ["tests.no_such_plugin", "json"])
def test_a_wrong_plugin_name_stops_the_start_with_a_message_naming_it(tmp_path, spec):
    with pytest.raises(ConfigError, match=re.escape(repr(spec))):
        create_app(base_config(tmp_path, IDP_PLUGINS=f"tests.example_plugin, {spec}"))


# --- without the plugin ---------------------------------------------------------------------


@pytest.mark.parametrize("app_config", [NO_PLUGINS])
def test_without_plugins_the_sign_in_needs_only_the_password(client, oidc, rp, alice):
    app_client, secret = rp
    params = oidc.sign_in(app_client, acr_values=ACR_STRONG)

    claims = id_token_claims(client, oidc, app_client, secret, params)
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:idp:acr:pwd"


@pytest.mark.parametrize("app_config", [NO_PLUGINS])
def test_without_plugins_nothing_of_the_plugin_is_reachable(client, runner, oidc, rp, alice):
    values = client.get("/.well-known/openid-configuration").get_json()["acr_values_supported"]
    assert ACR_STRONG not in values
    assert client.get("/example/step/x").status_code == 404
    assert runner.invoke(args=["example", "greet"]).exit_code != 0
    refused = runner.invoke(args=[
        "clients", "create", "--name", "Plain", "--redirect-uri", "https://plain.example/cb",
        "--example-level", "high",
    ])
    assert refused.exit_code != 0
    assert "--example-level" in refused.output


def is_plugin_reference(path: Path, line: str) -> bool:
    """An import of the plugins package, or its name anywhere but the default of
    ``IDP_PLUGINS`` in the package's top-level config.py or __init__.py."""
    if re.search(r"^\s*(from|import)\s+plugins\b", line):
        return True
    default_value = (path.parent == IDP_PACKAGE and path.name in {"config.py", "__init__.py"}
                     and "IDP_PLUGINS" in line)
    return "plugins.mfa" in line and not default_value


def test_the_core_never_imports_a_plugin():
    offenders = [
        f"{path.relative_to(IDP_PACKAGE)}:{number}"
        for path in IDP_PACKAGE.rglob("*")
        if path.is_file() and path.suffix != ".pyc"
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if is_plugin_reference(path, line)
    ]
    assert offenders == []


def test_the_core_reference_check_would_see_an_import():
    module = IDP_PACKAGE / "oauth" / "server.py"
    assert is_plugin_reference(module, "from plugins.mfa import steps")
    assert is_plugin_reference(module, "    import plugins")
    assert is_plugin_reference(module, 'load("plugins.mfa")')
    assert not is_plugin_reference(IDP_PACKAGE / "config.py",
                                   '    "IDP_PLUGINS": ("plugins.mfa", str),')


def test_the_core_templates_hold_nothing_of_a_plugin():
    core = ROOT / "templates"
    assert not (core / "mfa").exists()
    offenders = [
        f"{path.relative_to(core)}:{number}"
        for path in core.rglob("*") if path.is_file()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"url_for\(\s*['\"]mfa\.|['\"]mfa/", line)
    ]
    assert offenders == []


@pytest.mark.parametrize("template", ["mfa/passcode.html", "email/verify_email.txt"])
def test_the_mfa_plugin_s_pages_and_emails_exist_only_with_the_plugin(
        tmp_path, database_url, template):
    from flask import render_template
    from jinja2 import TemplateNotFound

    from idp import create_app
    from tests.conftest import base_config

    without = create_app(base_config(tmp_path))
    with without.test_request_context(), pytest.raises(TemplateNotFound):
        render_template(template)
    with_plugin = create_app(base_config(tmp_path, IDP_PLUGINS="plugins.mfa"))
    assert template in with_plugin.jinja_env.list_templates()


def test_an_installed_package_offers_its_plugin_by_an_entry_point(
        tmp_path, database_url, monkeypatch):
    """A third party's plugin is an ordinary package: its distribution declares an entry
    point of the ``idp.plugins`` group, and IDP_PLUGINS names that entry point."""
    from idp import create_app

    install_plugin_distribution(tmp_path, monkeypatch, "example-idp-plugin",
                                "greeter = tests.example_plugin:plugin")

    app = create_app(base_config(tmp_path, IDP_PLUGINS="greeter"))
    values = app.test_client().get("/.well-known/openid-configuration").get_json()[
        "acr_values_supported"]
    assert ACR_STRONG in values
    with app.app_context():
        db_remove(app)


def db_remove(app) -> None:
    from idp.extensions import db

    db.session.remove()
    db.engine.dispose()


def test_the_mfa_plugin_is_found_by_its_entry_point_name(tmp_path, database_url):
    from idp import create_app

    app = create_app(base_config(tmp_path, IDP_PLUGINS="mfa"))
    assert "mfa" in app.blueprints


PLUGINS_FOLDER = ROOT / "plugins"


def core_imports_besides_the_api(path: Path, root: Path = ROOT) -> list[str]:
    """The modules of ``idp`` that ``path`` imports other than ``idp.plugin_api``."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        found += [f"{path.relative_to(root)}:{node.lineno} {module}" for module in modules
                  if (module == "idp" or module.startswith("idp."))
                  and module != "idp.plugin_api"]
    return found


def test_plugins_import_nothing_of_the_core_but_its_plugin_api():
    offenders = [line for path in sorted(PLUGINS_FOLDER.rglob("*.py"))
                 for line in core_imports_besides_the_api(path)]
    assert offenders == []


def test_the_plugin_api_check_would_see_another_import(tmp_path):
    probe = tmp_path / "plugin.py"
    probe.write_text("from idp.plugin_api import db\nfrom idp import audit\n"
                     "def f():\n    import idp.oauth.server\n")
    assert [line.split()[-1] for line in core_imports_besides_the_api(probe, tmp_path)] == [
        "idp", "idp.oauth.server"]


def tables_created_in(folder: Path) -> set[str]:
    """The tables the Alembic revisions in ``folder`` create (``op.create_table("name", ...)``)."""
    import ast

    return {node.args[0].value for path in sorted(folder.glob("*.py"))
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "create_table" and node.args
            and isinstance(node.args[0], ast.Constant)}


def model_tables(module) -> set[str]:
    """The tables of the models defined in ``module``."""
    return {model.__tablename__ for model in vars(module).values()
            if isinstance(model, type) and issubclass(model, db.Model)
            and model.__module__ == module.__name__}


def test_a_plugins_tables_are_created_by_its_own_migrations_and_no_core_one():
    from plugins.mfa import models
    from plugins.mfa import plugin as mfa

    tables = model_tables(models)
    assert "mfa_factors" in tables
    assert tables_created_in(ROOT / "migrations" / "versions") & tables == set()
    assert tables <= tables_created_in(Path(mfa.migrations))


def test_the_migration_check_would_see_a_core_revision_creating_a_table(tmp_path):
    (tmp_path / "0099_probe.py").write_text(
        "from alembic import op\ndef upgrade():\n    op.create_table('mfa_factors')\n")
    assert tables_created_in(tmp_path) == {"mfa_factors"}


def test_the_mfa_plugins_templates_are_in_its_own_folder():
    assert (PLUGINS_FOLDER / "mfa" / "templates" / "mfa").is_dir()
    assert not (ROOT / "templates" / "mfa").exists()


def test_a_plugin_named_by_its_entry_point_and_its_module_loads_once(tmp_path, database_url):
    from idp import create_app

    app = create_app(base_config(tmp_path, IDP_PLUGINS="mfa, plugins.mfa"))
    assert [plugin.name for plugin in app.extensions["idp.registry"].plugins] == ["mfa"]
