"""``make run``'s defaults: the issuer it serves follows its port, and the environment wins."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def issuer_of_make_run(tmp_path: Path, **environment: str) -> str:
    """The ``IDP_ISSUER`` that ``make run`` gives its processes (the project's Makefile, with
    a last recipe for ``run`` that prints it instead of serving; nothing is installed)."""
    makefile = tmp_path / "Makefile"
    shutil.copy(ROOT / "Makefile", makefile)
    with makefile.open("a") as out:
        out.write('run:\n\t@echo "ISSUER=$$IDP_ISSUER"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(environment)
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "run"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=30, check=True)
    return next(line for line in done.stdout.splitlines()
                if line.startswith("ISSUER="))[len("ISSUER="):]


def test_make_run_serves_the_issuer_of_its_port(tmp_path):
    assert issuer_of_make_run(tmp_path) == "http://127.0.0.1:5000"
    assert issuer_of_make_run(tmp_path, IDP_PORT="8123") == "http://127.0.0.1:8123"
    assert issuer_of_make_run(tmp_path, IDP_PORT="8123",
                              IDP_ISSUER="https://idp.example") == "https://idp.example"
