"""WSGI entry point: ``gunicorn idp.wsgi:app`` (``wsgi:app`` in the checkout)."""

import sys

from idp import create_app
from idp.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # Said once, plainly; exit code 4 tells gunicorn the application cannot load, so it
    # stops instead of starting workers again and again.
    print(f"Error: {exc}", file=sys.stderr, flush=True)
    sys.exit(4)
