"""The wheel carries the checkout's ``templates/`` and ``migrations/`` inside the package (as
``idp/_home/``), so that an installed IdP finds them without the checkout; an editable install
reads them from the checkout itself. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = ("templates", "migrations")


class BuildWithHome(build_py):
    def run(self):
        editable = getattr(self, "editable_mode", False)
        if not editable:
            # A build folder left by an earlier build would ship files since removed.
            for package in ("idp", "plugins"):
                shutil.rmtree(Path(self.build_lib) / package, ignore_errors=True)
        super().run()
        if editable:
            return
        home = Path(self.build_lib) / "idp" / "_home"
        for name in BUNDLED:
            target = home / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(HERE / name, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithHome})
