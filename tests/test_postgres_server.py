"""The PostgreSQL server the tests start (tests/services/postgres.py): loopback only, an
unprivileged user, gone after stop() or when the process that started it dies, and a clear
failure when PostgreSQL is not installed."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from tests.services import postgres
from tests.services.postgres import PostgresServer, PostgresUnavailable


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_without_postgresql_installed_the_fixture_fails_saying_how_to_install_it(monkeypatch):
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)

    with pytest.raises(PostgresUnavailable, match=r"bash tests/services/setup\.sh"):
        postgres.find_bin_dir()
    with pytest.raises(pytest.fail.Exception) as failure:
        postgres.start_server()
    assert "bash tests/services/setup.sh" in str(failure.value)


def test_binaries_that_cannot_run_fail_with_the_reason_and_leave_nothing_behind():
    fake = Path(tempfile.mkdtemp())  # where the unprivileged server user can run them
    try:
        fake.chmod(0o755)
        for name in ("initdb", "postgres"):
            (fake / name).write_text("#!/bin/sh\necho 'broken installation' >&2\nexit 3\n")
            (fake / name).chmod(0o755)
        server = PostgresServer(bin_dir=fake)

        with pytest.raises(PostgresUnavailable, match="broken installation"):
            server.start()
        assert server.directory is None and not server.running
    finally:
        shutil.rmtree(fake)


def test_the_server_listens_on_loopback_only_as_an_unprivileged_user_and_stop_removes_it():
    server = PostgresServer().start()
    directory, pid = server.directory, server.process.pid
    try:
        with psycopg.connect(**server.connect_kwargs("postgres")) as connection:
            assert connection.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
            assert connection.execute("SHOW fsync").fetchone()[0] == "off"
        owner = Path(f"/proc/{pid}/status").read_text()
        uid = int(next(line for line in owner.splitlines() if line.startswith("Uid:")).split()[1])
        assert uid != 0
        with pytest.raises(psycopg.OperationalError):  # the password is needed
            psycopg.connect(host="127.0.0.1", port=server.port, user="idp_test",
                            password="wrong", dbname="postgres", connect_timeout=5)
    finally:
        server.stop()
    assert gone(pid)
    assert not directory.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**{**server.connect_kwargs("postgres"), "port": server.port},
                        connect_timeout=2)


def test_the_server_stops_by_itself_when_the_process_that_started_it_is_killed():
    script = textwrap.dedent("""
        import sys, time
        from tests.services.postgres import PostgresServer
        server = PostgresServer().start()
        print(server.process.pid, server.directory, flush=True)
        time.sleep(120)
    """)
    starter = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        pid, directory = starter.stdout.readline().split()
        pid = int(pid)
        os.kill(pid, 0)  # running
    finally:
        starter.kill()
        starter.wait(10)
        starter.stdout.close()
    assert gone(pid), "PostgreSQL outlived the process that started it"

    postgres.remove_stale_directories()  # as the next server started does
    assert not Path(directory).exists()
