"""WSGI entry point in the checkout: ``gunicorn wsgi:app`` (the same as ``idp.wsgi:app``)."""

from idp.wsgi import app

__all__ = ["app"]
