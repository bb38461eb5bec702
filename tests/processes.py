"""Stopping the servers the tests start as subprocesses (each in its own process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

STOP_TIMEOUT = 10.0


def stop_process(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to ``process``, SIGKILL after ``timeout`` seconds; then SIGKILL to whatever
    of its process group is left (gunicorn workers, say)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
