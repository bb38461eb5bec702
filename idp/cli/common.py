"""What the command groups share: their argument checks and JSON output."""

from __future__ import annotations

import json

import click


def check_length(value: str | None, what: str, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise click.BadParameter(f"at most {limit} characters", param_hint=what)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
