"""Serve one demo relying party: ``python -m examples.relying_party click-n-ship``.

The client secret, port and name come from ``demo_clients.json`` in the identity provider's
instance folder (``IDP_INSTANCE_PATH``, default ``instance/`` of the checkout), which
``idp demo seed`` writes. The issuer is ``IDP_ISSUER`` (default ``http://127.0.0.1:5000``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from pathlib import Path

from gunicorn.app.base import BaseApplication

from examples.relying_party.app import create_app

ROOT = Path(__file__).resolve().parents[2]

# What each demo app is about, and whether it demands MFA of everyone.
DEMO_APPS = {
    "click-n-ship": {
        "description": "Print shipping labels and pay postage online.",
        "require_mfa": False,
    },
    "customer-onboarding-portal": {
        "description": "Set up your business account and its services. "
                       "Multifactor authentication is required for everyone.",
        "require_mfa": True,
    },
    "informed-delivery": {
        "description": "Preview your incoming mail and packages.",
        "require_mfa": False,
    },
}


# Access log lines carry the path without the query string, where codes and states travel.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'


class DemoServer(BaseApplication):
    """gunicorn serving one demo app: one worker process with threads, because the app keeps
    the sessions ended by back-channel logout in its memory."""

    def __init__(self, app, host: str, port: int, threads: int = 8):
        self.application = app
        self.options = {
            "bind": f"{host}:{port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": threads,
            "accesslog": "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "graceful_timeout": 5,
        }
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.application


def instance_path() -> Path:
    return Path(os.environ.get("IDP_INSTANCE_PATH") or ROOT / "instance")


def load_registration(client_id: str, path: Path) -> dict:
    try:
        registered = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path} not found: run `idp db upgrade` and `idp demo seed` "
                         "(the demo is seeded only into an empty database).") from None
    if client_id not in registered:
        raise SystemExit(f"{client_id!r} is not in {path}; known: {', '.join(registered)}")
    return registered[client_id]


def build_config(args: argparse.Namespace) -> tuple[dict, str, int]:
    registration = load_registration(args.app, args.instance / "demo_clients.json")
    known = DEMO_APPS.get(args.app, {})
    port = args.port or int(registration["port"])
    base_url = args.base_url or f"http://{args.host}:{port}"
    require_mfa = known.get("require_mfa", False) if args.require_mfa is None \
        else args.require_mfa
    config = {
        "NAME": registration.get("name") or args.app,
        "DESCRIPTION": known.get("description", ""),
        "CLIENT_ID": args.app,
        "CLIENT_SECRET": registration["client_secret"],
        "ISSUER": args.issuer,
        "BASE_URL": base_url,
        "REQUIRE_MFA": require_mfa,
        "SECRET_KEY": os.environ.get("RP_SECRET_KEY") or secrets.token_urlsafe(32),
    }
    return config, args.host, port


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.relying_party",
                                     description="Serve one demo relying party.")
    parser.add_argument("client_id", nargs="?", help="e.g. click-n-ship")
    parser.add_argument("--app", help="the client id (instead of the positional argument)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: the port in demo_clients.json")
    parser.add_argument("--base-url", help="default: http://HOST:PORT")
    parser.add_argument("--issuer",
                        default=os.environ.get("IDP_ISSUER") or "http://127.0.0.1:5000")
    parser.add_argument("--instance", type=Path, default=instance_path())
    parser.add_argument("--require-mfa", action=argparse.BooleanOptionalAction, default=None,
                        help="ask for urn:idp:acr:mfa (default: per app)")
    args = parser.parse_args(argv)
    args.app = args.app or args.client_id
    if not args.app:
        parser.error(f"name the app: one of {', '.join(DEMO_APPS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config, host, port = build_config(args)
    app = create_app(config)
    print(f"{config['NAME']} ({args.app}) on {config['BASE_URL']}, "
          f"issuer {config['ISSUER']}", flush=True)
    # gunicorn reads its own command line: give it none of ours.
    DemoServer(app, host, port).run()


if __name__ == "__main__":
    main()
