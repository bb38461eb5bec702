"""Run the identity provider and the three demo apps together (``make run``).

    python -m examples.run_demo [--idp-url URL] [--port CLIENT_ID=PORT ...] -- IDP_COMMAND...

``IDP_COMMAND`` starts the identity provider (``make run`` gives gunicorn); every app listed
in ``demo_clients.json`` (written by ``idp demo seed`` into the instance folder) is started as
``python -m examples.relying_party CLIENT_ID``. Each child runs in its own process group and
its output is shown with its name in front.

Ctrl-C (SIGINT), SIGTERM or SIGHUP stops them all: SIGTERM to every child and then to
anything left in its process group, SIGKILL to whatever still runs after ``--stop-timeout``
seconds, and the launcher exits 0. When one of
them exits by itself, the others are stopped the same way and the launcher exits non-zero;
so it does when they are not all answering within ``--start-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_PASSWORD = "Demo-Password-1"  # noqa: S105 - the published demo credential
POLL_INTERVAL = 0.2

_output_lock = threading.Lock()


@dataclass
class Child:
    name: str
    command: list[str]
    health_url: str
    process: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    ready: bool = False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


class Launcher:
    def __init__(self, children: list[Child], start_timeout: float, stop_timeout: float):
        self.children = children
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.stop_requested: int | None = None  # the signal that asked to stop

    # --- signals ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_requested is not None:  # asked twice: no more waiting
            self._signal_groups(signal.SIGKILL)
        self.stop_requested = signum

    # --- the run ------------------------------------------------------------------------

    def run(self, on_ready) -> int:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            for child in self.children:
                child.process = subprocess.Popen(  # noqa: S603 - our own commands
                    child.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_die_with_parent,
                )
                say(f"started {child.name} (pid {child.pid}): {shlex.join(child.command)}")
        except OSError as exc:
            say(f"could not start {child.name}: {exc}")
            self.stop()
            return 1
        for child in self.children:  # threads only once every process is forked
            child.reader = threading.Thread(target=_copy_output, args=(child,), daemon=True)
            child.reader.start()

        code = self._wait_until_ready()
        if code is None:
            on_ready()
            code = self._watch()
        self.stop()
        return code

    def _wait_until_ready(self) -> int | None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._check()
            if code is not None:
                return code
            for child in self.children:
                if not child.ready:
                    child.ready = _answers(child.health_url)
            if all(child.ready for child in self.children):
                return None
            if time.monotonic() > deadline:
                waiting = ", ".join(c.name for c in self.children if not c.ready)
                say(f"not answering after {self.start_timeout:g}s: {waiting}; stopping")
                return 1
            time.sleep(POLL_INTERVAL)

    def _watch(self) -> int:
        while True:
            code = self._check()
            if code is not None:
                return code
            time.sleep(POLL_INTERVAL)

    def _check(self) -> int | None:
        """0 when a stop was asked for, the failure code when a child exited, else None."""
        if self.stop_requested is not None:
            say(f"{signal.Signals(self.stop_requested).name}: stopping everything")
            return 0
        for child in self.children:
            returncode = child.process.poll()
            if returncode is not None:
                say(f"{child.name} exited with code {returncode}; stopping the others")
                return returncode if returncode > 0 else 1
        return None

    # --- stopping -----------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM to each child (gunicorn then stops its workers itself), then to whatever
        is left in their process groups, SIGKILL after ``stop_timeout`` seconds."""
        started = [c for c in self.children if c.process is not None]
        for child in started:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline and any(c.process.poll() is None for c in started):
            time.sleep(0.05)
        self._signal_groups(signal.SIGTERM)  # anything a child left behind
        while time.monotonic() < deadline and self._alive(started):
            time.sleep(0.05)
        if self._alive(started):
            say(f"still running after {self.stop_timeout:g}s: sending SIGKILL")
            self._signal_groups(signal.SIGKILL)
        for child in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
            if child.reader is not None:
                child.reader.join(timeout=2)
        say("all stopped")

    def _signal_groups(self, signum: int) -> None:
        for child in self.children:
            if child.process is None:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signum)  # the child and whatever it forked

    def _alive(self, children: list[Child]) -> bool:
        """Whether a child, or anything left in its process group, still runs."""
        for child in children:
            if child.process.poll() is None:
                return True
            try:
                os.killpg(child.pid, 0)
            except (ProcessLookupError, PermissionError):
                continue
            return True
        return False


# --- helpers ------------------------------------------------------------------------------


def say(message: str) -> None:
    with _output_lock:
        sys.stdout.write(f"[demo] {message}\n")
        sys.stdout.flush()


def _copy_output(child: Child) -> None:
    prefix = f"[{child.name}] ".encode()
    out = sys.stdout.buffer
    for line in iter(child.process.stdout.readline, b""):
        with _output_lock:
            try:
                out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
                out.flush()
            except (BrokenPipeError, ValueError):
                pass
    child.process.stdout.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
            return True
    except urllib.error.HTTPError:
        return True  # it answers, whatever it says
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def instance_path() -> Path:
    return Path(os.environ.get("IDP_INSTANCE_PATH") or ROOT / "instance")


def load_apps(instance: Path, ports: dict[str, int]) -> list[dict]:
    path = instance / "demo_clients.json"
    try:
        registered = json.loads(path.read_text())
    except FileNotFoundError:
        say(f"{path} not found (the demo is seeded only into an empty database): "
            "starting the identity provider alone")
        return []
    apps = []
    for client_id, info in registered.items():
        port = ports.get(client_id, int(info["port"]))
        apps.append({"client_id": client_id, "name": info.get("name") or client_id,
                     "port": port, "url": f"http://127.0.0.1:{port}"})
    return apps


def print_tour(issuer: str, apps: list[dict], instance: Path) -> None:
    by_id = {app["client_id"]: app for app in apps}
    cutoff = os.environ.get("IDP_MFA_REQUIRED_FROM") or "2025-03-06"
    outbox = os.environ.get("IDP_DEV_OUTBOX") == "1"
    width = max([len("Identity provider")] + [len(app["name"]) for app in apps]) + 2
    lines = ["", "The demo is running; Ctrl-C stops everything.", "",
             f"  {'Identity provider':<{width}}{issuer}",
             f"  {'Discovery':<{width}}{issuer}/.well-known/openid-configuration"]
    lines += [f"  {app['name']:<{width}}{app['url']}" for app in apps]
    if outbox:
        lines.append(f"  {'Messages (outbox)':<{width}}{issuer}/dev/outbox")
    lines += [f"  {'Demo accounts':<{width}}olduser / {DEMO_PASSWORD} (created 2024-05-01)",
              f"  {'':<{width}}newuser / {DEMO_PASSWORD} (created 2025-06-01)",
              f"  {'Client secrets':<{width}}{instance / 'demo_clients.json'}", "",
              "A short tour:"]
    messages = (f"passcodes and links arrive at {issuer}/dev/outbox" if outbox
                else "passcodes and links go through the configured mail and SMS backends")
    steps = []
    if (cns := by_id.get("click-n-ship")) is not None:
        steps.append(
            f"Open {cns['url']} and sign in as newuser / {DEMO_PASSWORD} (MFA is mandatory "
            f"for accounts created on or after {cutoff}); {messages}. Click-N-Ship shows its Terms "
            "and Conditions the first time, then the ID token's sub, auth_time, acr and amr."
        )
    if (ind := by_id.get("informed-delivery")) is not None:
        steps.append(f"{ind['name']} at {ind['url']} shows single sign-on: Sign in there "
                     "asks no password (and has no terms).")
    if (cop := by_id.get("customer-onboarding-portal")) is not None:
        steps.append(f"{cop['name']} at {cop['url']} requires MFA for everyone.")
    steps.append("Step up asks for the NIST AAL2 level "
                 "(http://idmanagement.gov/ns/assurance/aal/2): only what is missing.")
    steps.append("Sign out at one app: the identity provider tells the others (back-channel "
                 "logout) and they show you signed out.")
    steps.append(f"Then sign in as olduser / {DEMO_PASSWORD} (created before {cutoff}): "
                 "MFA is offered and olduser may choose Not Now"
                 + (f"; {cop['name']} still insists." if cop else "."))
    lines += [f"  {n}. {step}" for n, step in enumerate(steps, 1)]
    with _output_lock:
        sys.stdout.write("\n".join(lines) + "\n\n")
        sys.stdout.flush()


def parse_port(value: str) -> tuple[str, int]:
    client_id, sep, port = value.partition("=")
    if not sep or not client_id or not port.isdigit():
        raise argparse.ArgumentTypeError("expected CLIENT_ID=PORT")
    return client_id, int(port)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.run_demo",
        description="Run the identity provider and the demo apps together.",
    )
    parser.add_argument("--idp-url", help="where the identity provider answers "
                        "(default: IDP_ISSUER, or http://127.0.0.1:5000)")
    parser.add_argument("--port", type=parse_port, action="append", default=[],
                        metavar="CLIENT_ID=PORT", help="serve that app on another port")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--stop-timeout", type=float, default=10.0)
    parser.add_argument("idp_command", nargs=argparse.REMAINDER,
                        help="after --: the command that serves the identity provider")
    args = parser.parse_args(argv)
    if args.idp_command[:1] == ["--"]:
        args.idp_command = args.idp_command[1:]
    if not args.idp_command:
        parser.error("give the identity provider's command after --")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    issuer = (os.environ.get("IDP_ISSUER") or "http://127.0.0.1:5000").rstrip("/")
    idp_url = (args.idp_url or issuer).rstrip("/")
    instance = instance_path()
    apps = load_apps(instance, dict(args.port))
    children = [Child("idp", list(args.idp_command), idp_url + "/healthz")]
    for app in apps:
        children.append(Child(
            app["client_id"],
            [sys.executable, "-m", "examples.relying_party", app["client_id"],
             "--port", str(app["port"])],
            app["url"] + "/",
        ))
    launcher = Launcher(children, args.start_timeout, args.stop_timeout)
    launcher.install_signal_handlers()
    return launcher.run(on_ready=lambda: print_tour(issuer, apps, instance))


if __name__ == "__main__":
    sys.exit(main())
