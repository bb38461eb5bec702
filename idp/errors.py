"""Error pages: every failure a person can meet explains what happened and what to do."""

from __future__ import annotations

import logging

from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Endpoints whose callers are programs: they get JSON errors, not pages.
API_PATHS = ("/token", "/userinfo", "/revoke", "/introspect", "/jwks.json", "/.well-known/")


class InteractionError(Exception):
    """A problem to show to the person in the browser (never redirected to a client)."""

    def __init__(self, message: str, title: str = "Something went wrong", status: int = 400):
        super().__init__(message)
        self.message, self.title, self.status = message, title, status


def error_page(title: str, message: str, status: int):
    return render_template("idp/error.html", title=title, message=message), status


def _wants_json() -> bool:
    return request.path.startswith(API_PATHS)


def init_app(app) -> None:
    from idp.ratelimit import RateLimitUnavailable

    @app.errorhandler(RateLimitUnavailable)
    def rate_limits_unavailable(exc: RateLimitUnavailable):
        # Throttled actions are refused while their counters cannot be kept (logged there).
        headers = {"Retry-After": str(exc.retry_after)}
        if _wants_json():
            return jsonify(error="temporarily_unavailable",
                           error_description="Try again shortly."), 503, headers
        page, status = error_page(
            "Temporarily unavailable",
            "This can't be done right now; nothing you entered was lost on our side. "
            "Try again in a minute.",
            503,
        )
        return page, status, headers

    @app.errorhandler(InteractionError)
    def interaction_error(exc: InteractionError):
        return error_page(exc.title, exc.message, exc.status)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_page(
            "Page expired",
            "This page was open too long or was sent twice. Go back, reload the page and "
            "try again.",
            400,
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if _wants_json():
            error = "invalid_request" if exc.code < 500 else "server_error"
            return jsonify(error=error, error_description=exc.description), exc.code
        messages = {
            404: ("Page not found", "There is no page at this address. Go back to the "
                  "application you came from and start again."),
            405: ("Not allowed", "This page cannot be used that way. Go back and try again."),
            413: ("Request too large", "What was sent is too large. Go back and try again."),
        }
        title, message = messages.get(
            exc.code, ("Something went wrong", "Go back to the application and try again.")
        )
        return error_page(title, message, exc.code)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if _wants_json():
            return jsonify(error="server_error",
                           error_description="An unexpected error occurred."), 500
        return error_page(
            "Something went wrong",
            "An unexpected error occurred; nothing you entered was lost on our side. "
            "Go back to the application and try again.",
            500,
        )
