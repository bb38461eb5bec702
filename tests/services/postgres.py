"""A throwaway PostgreSQL server for the tests, and pytest fixtures around it.

``PostgresServer`` runs ``initdb`` into a temporary directory (in /dev/shm when there is one)
and starts ``postgres`` on a free 127.0.0.1 port with its unix socket in that directory, tuned
for speed (no fsync). The server
runs as an unprivileged user: the current one, or, when the tests run as root (which PostgreSQL
refuses), the ``postgres`` system user if it exists and ``nobody`` otherwise. The superuser has
a random password, so only whoever reads this process's URLs can connect.

The server stops when ``stop()`` is called, when the session fixture ends (also after a
failure), at interpreter exit, and, should the test process be killed, by itself: the kernel
sends it SIGQUIT (immediate shutdown) when its parent dies.

Fixtures (the plugin ``tests.services.postgres``):

- ``postgres_server``: the running server, one per test session (one per xdist worker);
- ``postgres_database``: ``postgres_database()`` creates a fresh empty database and returns
  its SQLAlchemy URL (``postgresql+psycopg://...``); ``postgres_database(template="name")``
  copies a template database. Every database it created is dropped after the test.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.services import serve_session, start_or_fail

SETUP_HINT = "run `bash tests/services/setup.sh` (installs PostgreSQL with apt-get) and retry"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SUPERUSER = "idp_test"
DIRECTORY_PREFIX = "idp-postgres-"
_PR_SET_PDEATHSIG = 1


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries are missing or the server did not start."""


def find_bin_dir() -> Path:
    """The directory of the newest installed PostgreSQL's ``initdb`` and ``postgres``."""
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        directory = Path(path)
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            version = directory.parent.name
            candidates.append((int(version) if version.isdigit() else 0, directory))
    if candidates:
        return max(candidates)[1]
    on_path = shutil.which("initdb"), shutil.which("postgres")
    if all(on_path):
        return Path(on_path[0]).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb and postgres in /usr/lib/postgresql/*/bin or "
        f"on PATH): {SETUP_HINT}."
    )


def server_user() -> str | None:
    """The user the server runs as: None for the current one, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root and neither the postgres nor the nobody user "
                              "exists to run PostgreSQL as")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_directory() -> Path:
    """Where the clusters go: /dev/shm (memory) when there is one, as creating a database
    there is many times faster than on a disk; else the system's temporary directory."""
    shm = Path("/dev/shm")  # noqa: S108 - a private directory is made inside
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def remove_stale_directories() -> None:
    """Remove the directories of servers whose test process was killed (their servers
    stopped with it)."""
    for path in base_directory().glob(DIRECTORY_PREFIX + "*"):
        try:
            owner = int((path / "owner").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _die_with_parent() -> None:
    """In the child, before exec: get SIGQUIT (immediate shutdown) when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT, 0, 0, 0)


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self, bin_dir: Path | None = None, user: str | None = None):
        self.bin_dir = bin_dir or find_bin_dir()
        self.user = user if user is not None else server_user()
        self.password = secrets.token_urlsafe(24)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.directory: Path | None = None
        self.process: subprocess.Popen | None = None
        self._numbers = itertools.count(1)

    # --- paths and processes ------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def _run_as(self) -> dict:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.user is not None:
            env["HOME"] = str(self.directory)
        return env

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> PostgresServer:
        """initdb and start; waits at most ``timeout`` seconds for the server to answer."""
        try:
            self._initdb()
            for attempt in range(3):
                self.port = free_port()
                self._spawn()
                if self._wait_ready(timeout):
                    atexit.register(self.stop)
                    return self
                if "could not bind" not in self._log_tail() or attempt == 2:
                    break
                self._halt()
            raise PostgresUnavailable(
                f"PostgreSQL did not accept connections on {self.host}:{self.port} within "
                f"{timeout:.0f} s. Server log:\n{self._log_tail()}\n({SETUP_HINT})"
            )
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        remove_stale_directories()
        self.directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX, dir=base_directory()))
        (self.directory / "owner").write_text(str(os.getpid()))
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        if self.user is not None:
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        try:
            result = subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                 f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8",
                 "--no-locale", "--no-sync"],
                cwd=self.directory, env=self._environment(), capture_output=True, text=True,
                timeout=120, check=False, **self._run_as(),
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise PostgresUnavailable(f"initdb could not run: {error} ({SETUP_HINT})") from error
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed:\n{result.stderr.strip()}\n({SETUP_HINT})")

    def _spawn(self) -> None:
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.directory),
            "unix_socket_permissions": "0700",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "max_wal_size": "128MB",
            "min_wal_size": "32MB",
            "checkpoint_timeout": "1h",
            # Shared memory segments in the data directory, gone with it however it stops.
            "dynamic_shared_memory_type": "mmap",
            "log_min_messages": "warning",
        }
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.directory, env=self._environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                **self._run_as(),
            )

    def _wait_ready(self, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with psycopg.connect(**self.connect_kwargs("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def _halt(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # Fast shutdown (ends the sessions), then immediate, then a kill, each one bounded.
        for stop_signal in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(stop_signal)
            try:
                process.wait(STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        """Stop the server and remove its directory (the data is thrown away)."""
        self._halt()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- databases ----------------------------------------------------------------------

    def connect_kwargs(self, dbname: str) -> dict:
        return {"host": self.host, "port": self.port, "user": SUPERUSER,
                "password": self.password, "dbname": dbname}

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of database ``dbname`` (psycopg 3 driver)."""
        from sqlalchemy.engine import URL

        return URL.create("postgresql+psycopg", username=SUPERUSER, password=self.password,
                          host=self.host, port=self.port, database=dbname
                          ).render_as_string(hide_password=False)

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(**self.connect_kwargs(dbname), autocommit=True) as connection:
            connection.execute(sql)

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """Create a database (empty, or a copy of ``template``); returns its URL."""
        if name is None:
            name = f"t{os.getpid()}_{next(self._numbers)}"
        sql = f'CREATE DATABASE "{name}"'
        if template:
            sql += f' TEMPLATE "{template}"'
        self.execute(sql)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the connections that are still open to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TemplateCopies:
    """Copies of a template database for one test each.

    A background thread makes the next copy while a test runs and drops the copies tests
    are done with, so a test seldom waits for CREATE or DROP DATABASE.
    """

    def __init__(self, server: PostgresServer, template: str, ahead: int = 1):
        self.server = server
        self.template = template
        self.ahead = ahead
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-copies")
        self._ready: list[Future] = []
        self._lock = threading.Lock()

    def _make(self) -> Future:
        return self._executor.submit(self.server.create_database, template=self.template)

    def take(self, timeout: float = 120.0) -> str:
        """A fresh copy of the template: its URL."""
        with self._lock:
            if not self._ready:
                self._ready.append(self._make())
            future = self._ready.pop(0)
            while len(self._ready) < self.ahead:
                self._ready.append(self._make())
        return future.result(timeout)

    def give_back(self, url: str) -> None:
        """Drop a copy (in the background)."""
        from sqlalchemy.engine import make_url

        self._executor.submit(self.server.drop_database, make_url(url).database)

    def close(self) -> None:
        """Drop the copies made ahead and wait for the background work to end."""
        with self._lock:
            ready, self._ready = self._ready, []
        for future in ready:
            with contextlib.suppress(Exception):
                self.give_back(future.result(120))
        self._executor.shutdown(wait=True, cancel_futures=False)


def start_server() -> PostgresServer:
    """Start a server, or fail the test with what to do about it."""
    return start_or_fail(lambda: PostgresServer().start(), PostgresUnavailable, "PostgreSQL")


@pytest.fixture(scope="session")
def postgres_server():
    """A running PostgreSQL server for this test session (one per xdist worker)."""
    server = start_server()
    yield from serve_session(server, server.stop)


@pytest.fixture
def postgres_database(postgres_server):
    """``postgres_database(template=None)`` makes a fresh database and returns its URL;
    the databases are dropped after the test."""
    from sqlalchemy.engine import make_url

    created: list[str] = []

    def create(template: str | None = None) -> str:
        url = postgres_server.create_database(template=template)
        created.append(make_url(url).database)
        return url

    yield create
    for name in created:
        postgres_server.drop_database(name)
