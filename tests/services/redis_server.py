"""A throwaway Redis server for the tests, and pytest fixtures around it.

``RedisServer`` starts ``redis-server`` on a free 127.0.0.1 port with its working directory in
a temporary directory and nothing written to disk (no snapshots, no append-only file). It
needs a random password, so only whoever reads this process's URLs can connect.

The server stops when ``stop()`` is called, when the session fixture ends (also after a
failure), at interpreter exit, and, should the test process be killed, by itself: the kernel
sends it SIGTERM when its parent dies.

Fixtures (the plugin ``tests.services.redis_server``):

- ``redis_server``: the running server, one per test session (one per xdist worker);
- ``redis_url``: the URL of a logical database emptied for the test (``FLUSHDB``), e.g.
  ``{"IDP_REDIS_URL": redis_url}`` in a test's settings.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.processes import stop_process
from tests.services import serve_session, start_or_fail

SETUP_HINT = "run `bash tests/services/setup.sh` (installs redis-server with apt-get) and retry"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


class RedisUnavailable(RuntimeError):
    """redis-server is missing or did not start."""


def find_redis_server() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
    if not found:
        raise RedisUnavailable(f"redis-server is not installed (not on PATH): {SETUP_HINT}.")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class RedisServer:
    """One redis-server in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self, executable: str | None = None):
        self.executable = executable or find_redis_server()
        self.password = secrets.token_urlsafe(24)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.directory: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def url(self, database: int = 0) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/{database}"

    def client(self, database: int = 0):
        import redis

        return redis.Redis(host=self.host, port=self.port, db=database, password=self.password,
                           socket_timeout=5, socket_connect_timeout=5)

    # --- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> RedisServer:
        """Start; waits at most ``timeout`` seconds for the server to answer PING."""
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="idp-redis-"))
            config = self.directory / "redis.conf"
            # The password in a file only this user reads, not on the command line.
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"requirepass {self.password}\n")
            for attempt in range(3):
                self.port = free_port()
                self._spawn(config)
                if self._wait_ready(timeout):
                    atexit.register(self.stop)
                    return self
                if "Address already in use" not in self._log_tail() or attempt == 2:
                    break
                self._halt()
            raise RedisUnavailable(
                f"redis-server did not answer PING on {self.host}:{self.port} within "
                f"{timeout:.0f} s. Server log:\n{self._log_tail()}\n({SETUP_HINT})"
            )
        except BaseException:
            self.stop()
            raise

    def _spawn(self, config: Path) -> None:
        command = [
            self.executable, str(config),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--databases", "16",
            "--logfile", "",
            "--loglevel", "warning",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, timeout: float) -> bool:
        import redis

        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def _halt(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop the server and remove its directory (nothing is kept)."""
        self._halt()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def start_server() -> RedisServer:
    """Start a server, or fail the test with what to do about it (never a silent skip)."""
    return start_or_fail(lambda: RedisServer().start(), RedisUnavailable, "Redis")


@pytest.fixture(scope="session")
def redis_server():
    """A running Redis server for this test session (one per xdist worker)."""
    server = start_server()
    yield from serve_session(server, server.stop)


@pytest.fixture
def redis_url(redis_server):
    """The URL of logical database 0 of the session's server, emptied for this test."""
    client = redis_server.client(0)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url(0)
