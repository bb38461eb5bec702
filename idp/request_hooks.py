"""The IdP's own work before and after every request, as one Flask hook each.

Flask calls every registered hook through ``ensure_sync`` (an inspection per hook and per
request), so the core's per-request work (the metrics timer, the request id, the CSRF check,
the security headers, back-channel logouts, the SQLite checkpoint) is registered here, in
the order it must run, and Flask sees two hooks::

    hooks = request_hooks(app)
    hooks.before(assign_request_id)      # called with no argument; a return value answers
    hooks.after(add_security_headers)    # called with the response; returns it

``before`` functions run in the order registered, ``after`` functions in the reverse order (as
Flask runs its own): what is registered first (the metrics timer) spans all the others.
Blueprints keep their own hooks.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response

_KEY = "idp.request_hooks"


class RequestHooks:
    def __init__(self) -> None:
        self._before: list[Callable[[], Response | None]] = []
        self._after: list[Callable[[Response], Response]] = []

    def before(self, function: Callable[[], Response | None]) -> Callable:
        self._before.append(function)
        return function

    def after(self, function: Callable[[Response], Response]) -> Callable:
        self._after.append(function)
        return function

    def run_before(self) -> Response | None:
        for function in self._before:
            answer = function()
            if answer is not None:
                return answer
        return None

    def run_after(self, response: Response) -> Response:
        for function in reversed(self._after):
            response = function(response)
        return response


def request_hooks(app: Flask) -> RequestHooks:
    """The application's hooks, registered with Flask the first time they are asked for."""
    hooks = app.extensions.get(_KEY)
    if hooks is None:
        hooks = app.extensions[_KEY] = RequestHooks()
        app.before_request(hooks.run_before)
        app.after_request(hooks.run_after)
    return hooks
