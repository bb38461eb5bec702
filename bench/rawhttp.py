"""A lean HTTP/1.1 client on asyncio streams, for the scenarios that are one request each.

httpx spends about a millisecond of CPU per request when every request needs a new
connection (gunicorn's sync worker closes each connection after its answer), which is more
than the IdP spends answering ``/healthz``: a load generator built on it alone would measure
itself. This client does only what those scenarios need: one request at a time per
connection, keep-alive when the server allows it, ``Content-Length`` or read-to-close
bodies, no redirects, no cookies. The sign-in, which needs cookies and forms, uses httpx.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

TIMEOUT = 30.0
MAX_HEADER = 64 * 1024


class HttpError(Exception):
    """The connection failed or the answer was not HTTP."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def basic_authorization(username: str, password: str) -> str:
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class RawHttp:
    """One connection's worth of client (reconnects when the server closed it)."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = parts.netloc.encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.requests = 0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    def prepare(self, method: str, path: str, headers: dict[str, str] | None = None,
                form: dict[str, str] | None = None) -> bytes:
        """The bytes of a request, to send as often as wanted."""
        body = urlencode(form).encode() if form is not None else b""
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host_header,
                 b"Accept: application/json", b"User-Agent: idp-bench"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}".encode())
        if form is not None:
            lines.append(b"Content-Type: application/x-www-form-urlencoded")
        if body or method not in ("GET", "HEAD"):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def send(self, request: bytes) -> Answer:
        self.requests += 1
        try:
            return await asyncio.wait_for(self._exchange(request), TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, request: bytes) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=MAX_HEADER)
        reader, writer = self.reader, self.writer
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            raise HttpError("chunked answers are not supported")
        else:
            body = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
            await self.close()
        return Answer(int(status), headers, body)
