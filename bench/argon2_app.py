"""The argon2id ceiling: a WSGI application that verifies one password per request with
``idp.passwords`` (the IdP's hasher, with the IdP's ``IDP_ARGON2_*`` settings), served by
gunicorn with the IdP's settings: ``gunicorn -c gunicorn.conf.py bench.argon2_app:app``.

Its rate is the most sign-ins per second a worker could serve if nothing but the password
check cost anything.
"""

from __future__ import annotations

from idp import passwords
from idp.config import load_settings

PASSWORD = "Bench-Password-1"  # noqa: S105 - the benchmark accounts' password
_SETTINGS = load_settings()  # the IdP's IDP_ARGON2_* (or their defaults)
HASHING = passwords.hashing(_SETTINGS["IDP_ARGON2_MEMORY_KIB"], _SETTINGS["IDP_ARGON2_TIME_COST"],
                            _SETTINGS["IDP_ARGON2_PARALLELISM"])
STORED = HASHING.hasher.hash(PASSWORD)


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if HASHING.hasher.verify(STORED, PASSWORD):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
        return [b"verified"]
    start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                ("Content-Length", "6")])
    return [b"failed"]
