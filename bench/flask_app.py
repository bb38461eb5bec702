"""The framework's reference: a bare Flask application with the IdP's ``/healthz`` (the same
JSON answer) and nothing else, served by gunicorn with the IdP's settings:
``gunicorn -c gunicorn.conf.py bench.flask_app:app``.

Its rate is the most requests per second a worker of any Flask application answers here;
the IdP's per-request work (hooks, headers, logging, metrics) is what ``/healthz`` loses
against it, and the API scenarios' targets are fractions of it.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
