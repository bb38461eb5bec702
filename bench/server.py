"""The servers of the benchmark: an IdP instance (its folder, database and production
settings, set up through the ``idp`` command), gunicorn pinned to one CPU, the message sinks,
the CPUs of the server and the load generator, and what ``/proc`` tells: the server's CPU
time and memory, the load average."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
STOP_TIMEOUT = 10.0
PASSWORD = "Bench-Password-1"  # noqa: S105 - the benchmark accounts' password


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In a child before exec: receive SIGTERM when the benchmark dies (Linux), so that no
    server outlives it, even after a SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def pin_command(command: list[str], cpu: int | None) -> tuple[list[str], object]:
    """``command`` run on ``cpu`` (``taskset`` when present, else the affinity set in the
    child); the preexec function to pass to Popen."""
    if cpu is None:
        return command, _die_with_parent
    taskset = shutil.which("taskset")
    if taskset:
        return [taskset, "-c", str(cpu), *command], _die_with_parent

    def pin_and_die_with_parent() -> None:
        _die_with_parent()
        os.sched_setaffinity(0, {cpu})

    return command, pin_and_die_with_parent


def pinning() -> tuple[int | None, int | None, str]:
    """(server CPU, load generator CPU, description)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, f"not pinned (only CPU {cpus} available)"
    tool = "taskset" if shutil.which("taskset") else "sched_setaffinity"
    return cpus[0], cpus[1], f"server on CPU {cpus[0]} ({tool}), load generator on CPU {cpus[1]}"


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)


# --- /proc ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(x) for x in fh.read().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    out = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0]) * 1024
    return out


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


# --- gunicorn ------------------------------------------------------------------------------


@dataclass
class Gunicorn:
    """gunicorn with the project's ``gunicorn.conf.py``, one worker, on ``cpu``."""

    env: dict[str, str]
    log_path: Path
    app: str = "wsgi:app"
    cpu: int | None = 0
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.log_path.with_suffix(".access.log")

    def access_log_size(self) -> int:
        try:
            return self.access_log.stat().st_size
        except OSError:
            return 0

    def request_times(self, since: int) -> list[float]:
        """Seconds each request took in the worker, from the access log lines written after
        offset ``since`` (the project's access log format ends with the time, e.g. 0.0012s)."""
        times = []
        with contextlib.suppress(OSError), open(self.access_log, "rb") as fh:
            fh.seek(since)
            for line in fh.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError, IndexError):
                    times.append(float(line.rsplit(" ", 1)[1].rstrip("s")))
        return times

    def start(self, ready_path: str = "/healthz", timeout: float = 60.0) -> Gunicorn:
        metrics = self.log_path.with_suffix(".metrics")
        metrics.mkdir(exist_ok=True)
        env = {**self.env, "GUNICORN_BIND": f"{HOST}:{self.port}", "GUNICORN_WORKERS": "1",
               "PROMETHEUS_MULTIPROC_DIR": str(metrics),
               "GUNICORN_ACCESS_LOG": str(self.access_log)}
        command, preexec = pin_command(
            [str(BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"), self.app],
            self.cpu)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the server's life
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own command line
                command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + ready_path).status_code == 200 and self.workers():
                        return self
                time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"gunicorn ({self.app}) did not start:\n{tail}")

    def stop(self) -> None:
        stop_process(self.process)

    def workers(self) -> list[int]:
        return children(self.process.pid) if self.process else []

    def cpu_seconds(self) -> float:
        """CPU time of the master and its workers (their threads included)."""
        if self.process is None:
            return 0.0
        return sum(cpu_seconds(pid) for pid in [self.process.pid, *self.workers()])

    def worker_memory(self) -> dict[str, int]:
        """The largest VmRSS and VmHWM among the workers."""
        values = [memory(pid) for pid in self.workers()]
        return {"VmRSS": max((v.get("VmRSS", 0) for v in values), default=0),
                "VmHWM": max((v.get("VmHWM", 0) for v in values), default=0)}


# --- the message sinks ---------------------------------------------------------------------


class Sinks:
    """``python -m bench.sinks`` in a process of its own, on the load generator's CPU."""

    def __init__(self, cpu: int | None):
        self.smtp_port, self.sms_port = free_port(), free_port()
        command, preexec = pin_command(
            [sys.executable, "-m", "bench.sinks", str(self.smtp_port), str(self.sms_port)], cpu)
        self.process = subprocess.Popen(  # noqa: S603 - our own command line
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True, preexec_fn=preexec)
        line = self._readline(15.0)
        if line != "ready":
            self.stop()
            raise RuntimeError(f"the message sinks did not start ({line!r})")

    def _readline(self, timeout: float) -> str:
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return ""
        return self.process.stdout.readline().strip()

    def stats(self) -> str:
        if self.process.poll() is not None:
            return "stopped"
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return self._readline(5.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                stop_process(self.process)


# --- an IdP instance -----------------------------------------------------------------------


@dataclass
class Client:
    client_id: str
    secret: str
    redirect_uri: str = ""


class Instance:
    """An instance folder with its SQLite database and production settings; clients and
    users are registered through the ``idp`` command."""

    def __init__(self, root: Path, name: str, sinks: Sinks):
        self.name = name
        self.path = root / name
        self.path.mkdir(parents=True)
        self.seed = secrets.token_hex(16)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("IDP_", "GUNICORN_", "PROMETHEUS_"))
                    and k not in ("WEB_CONCURRENCY", "PORT")}
        self.env.update({
            "IDP_ENV": "production",
            "IDP_SECRET_KEY": secrets.token_urlsafe(48),
            "IDP_ENCRYPTION_KEY": secrets.token_urlsafe(48),
            "IDP_INSTANCE_PATH": str(self.path),
            "IDP_DATABASE_URL": f"sqlite:///{self.path / 'idp.db'}",
            "IDP_PLUGINS": "plugins.mfa",
            "IDP_MAIL_BACKEND": "smtp",
            "IDP_MAIL_FROM": "IdP <no-reply@bench.example>",
            "IDP_SMTP_HOST": HOST,
            "IDP_SMTP_PORT": str(sinks.smtp_port),
            "IDP_SMTP_ALLOW_PLAINTEXT": "1",  # the mail sink listens on loopback
            "IDP_SMS_BACKEND": "webhook",
            "IDP_SMS_WEBHOOK_URL": f"http://{HOST}:{sinks.sms_port}/sms",
            "IDP_SMS_WEBHOOK_SECRET": secrets.token_urlsafe(32),
            "GUNICORN_WORKERS": "1",
        })
        self.server: Gunicorn | None = None
        self.port = free_port()
        self.env["IDP_ISSUER"] = f"http://{HOST}:{self.port}"
        self.code_client: Client | None = None
        self.service_client: Client | None = None
        self.users = 0

    @property
    def issuer(self) -> str:
        return self.env["IDP_ISSUER"]

    def idp(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(  # noqa: S603 - our own command line
            [str(BIN / "idp"), *args], cwd=ROOT, env=self.env, input=stdin,
            capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"idp {' '.join(args[:2])} failed: {result.stderr[-2000:]}")
        return result.stdout

    def set_up(self, users: int) -> dict:
        """Migrate, register the two clients and the users; returns the seed's report."""
        self.idp("db", "upgrade")
        terms = self.path / "terms.txt"
        terms.write_text("Benchmark terms: by selecting I Agree you accept them.\n")
        redirect_uri = f"http://{HOST}:9/callback"
        web = json.loads(self.idp(
            "clients", "create", "--name", "Bench web app", "--redirect-uri", redirect_uri,
            "--grant-type", "authorization_code", "--grant-type", "refresh_token",
            "--scope", "openid profile email offline_access", "--terms-file", str(terms),
            "--mfa-policy", "cohort", "--json"))
        self.code_client = Client(web["client_id"], web["client_secret"], redirect_uri)
        service = json.loads(self.idp(
            "clients", "create", "--name", "Bench service", "--grant-type",
            "client_credentials", "--scope", "profile", "--json"))
        self.service_client = Client(service["client_id"], service["client_secret"])
        from bench.seed import USERNAME_FORMAT

        template = USERNAME_FORMAT.format(0)
        self.idp("users", "create", "--username", template, "--email",
                 f"{template}@bench.example", "--password-stdin", stdin=PASSWORD + "\n")
        result = subprocess.run(  # noqa: S603 - our own command line
            [sys.executable, "-m", "bench.seed", str(users), template, self.seed],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"seeding {users} users failed: {result.stderr[-2000:]}")
        self.users = users
        return json.loads(result.stdout.strip().splitlines()[-1])

    def start(self, cpu: int | None) -> Gunicorn:
        self.server = Gunicorn(self.env, self.path / "gunicorn.log", cpu=cpu, port=self.port)
        return self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
