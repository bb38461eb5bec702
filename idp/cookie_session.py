"""The signed session cookie, as Flask writes it, without Flask's per-request set-up cost.

The cookie holds only opaque random values (see ``idp.auth.sessions``). Flask's own
interface builds its signing serializer on every request, cookie or not; this one builds it
once per application and secret key, and opens no serializer at all for a request without
the cookie (API calls, probes, first visits).
"""

from __future__ import annotations

from flask.sessions import SecureCookieSessionInterface


class CookieSessionInterface(SecureCookieSessionInterface):
    def __init__(self) -> None:
        self._built: tuple[tuple, object] | None = None  # (the keys, their serializer)

    def get_signing_serializer(self, app):
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        if self._built is None or self._built[0] != keys:  # first use, or the keys changed
            serializer = super().get_signing_serializer(app)
            if serializer is None:  # no secret key: Flask's null session
                return None
            self._built = (keys, serializer)
        return self._built[1]

    def open_session(self, app, request):
        # Without the cookie's name in the Cookie header (most API calls), nothing to parse.
        if app.secret_key and self.get_cookie_name(app) + "=" not in request.environ.get(
                "HTTP_COOKIE", ""):
            return self.session_class()
        return super().open_session(app, request)
