"""A small plugin that uses every hook of ``idp.plugins``; loaded with
``IDP_PLUGINS=tests.example_plugin`` by tests/test_plugin_interface.py.

It adds a "security key" step after the password, an ``acr`` level met by that step, a
CLI group, a per-client setting and a userinfo claim.
"""

from __future__ import annotations

from typing import Any

import click
from authlib.oauth2.rfc6749 import scope_to_list
from flask import Blueprint, Flask, current_app, redirect, render_template_string
from flask.cli import with_appcontext
from flask_wtf import FlaskForm
from wtforms import SubmitField

from idp.plugin_api import (
    AcrLevel,
    ClientSetting,
    PluginRegistry,
    SignInContext,
    Step,
    db,
    load_interaction,
    record_authentication,
    resume_url,
)

STEP_NAME = "example"
EXAMPLE_EVENT = {"method": "example", "amr": ["hwk"], "factor": "example"}
ACR_STRONG = "urn:example:acr:strong"

bp = Blueprint("example", __name__, url_prefix="/example")

STEP_PAGE = """{% extends "base.html" %}
{% block content %}
<h1>Use Your Security Key</h1>
<form method="post">
  {{ form.csrf_token }}
  {{ form.submit(class_="button primary") }}
</form>
{% endblock %}"""


class SecurityKeyForm(FlaskForm):
    submit = SubmitField("Use Security Key")


class ExampleStep(Step):
    """Needed once in every sign-in, after the password."""

    name = STEP_NAME
    endpoint = "example.step"

    def needed(self, ctx: SignInContext) -> str | None:
        if ctx.step_state(self.name).get("done"):
            return None
        return "example_needed"


@bp.route("/step/<pending_id>", methods=["GET", "POST"])
def step(pending_id: str):
    # Only while this step is the sign-in's current one, for the user signed in now.
    ctx = load_interaction(pending_id, serves=STEP_NAME)
    form = SecurityKeyForm()
    if form.validate_on_submit():
        record_authentication(ctx.session.user, EXAMPLE_EVENT)
        ctx.save_state(STEP_NAME, {"done": True})
        db.session.commit()
        return redirect(resume_url(ctx.pending))
    return render_template_string(STEP_PAGE, form=form)


def _strong_met(session, client) -> bool:
    return session is not None and any(
        e.get("method") == EXAMPLE_EVENT["method"] for e in session.events or []
    )


@click.group("example", help="Commands of the example plugin.")
def example_cli():
    pass


@example_cli.command("greet")
@with_appcontext
def greet():
    click.echo(current_app.config["IDP_EXAMPLE_GREETING"])


def _apply_level(settings: dict, params: dict) -> None:
    if params.get("example_level") is not None:
        settings["example_level"] = params["example_level"]


LEVEL_SETTING = ClientSetting(
    name="example_level",
    options=[click.Option(["--example-level"], type=click.Choice(["low", "high"]),
                          help="How strongly the example plugin guards this client.")],
    apply=_apply_level,
    default="low",
)


def badge_claims(user, scope: str) -> dict:
    if "profile" not in (scope_to_list(scope) or []):
        return {}
    return {"example_badge": f"badge-{user.username}"}


class ExamplePlugin:
    name = "example"
    default_config: dict[str, tuple[Any, type]] = {
        "IDP_EXAMPLE_GREETING": ("hello from the example plugin", str),
    }

    def init_app(self, app: Flask, registry: PluginRegistry) -> None:
        registry.add_blueprint(bp)
        registry.add_step(ExampleStep())
        registry.add_acr_level(AcrLevel(ACR_STRONG, rank=20, is_met=_strong_met))
        registry.add_cli_group(example_cli)
        registry.add_client_setting(LEVEL_SETTING)
        registry.add_claims(badge_claims)


plugin = ExamplePlugin()
