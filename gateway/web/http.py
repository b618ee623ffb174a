"""A tiny read-only HTTP/1.1 server on ``asyncio.start_server``.

Why not aiohttp.web (installed already, with influxdb-client[async]): importing
it costs 11.1-11.4 MB of RSS in a daemon whose sinks do not load aiohttp (the
default local-store setup), measured by bench/bench_web.py, and the page's
budget is 5 MB. The page needs GET of a handful of paths, keep-alive and Basic
auth; this is that, in under 200 lines, and nothing else: GET and HEAD only
(anything else is 405), bounded request heads, a bounded number of connections,
an idle timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("gateway.web")

MAX_HEAD_BYTES = 8192
MAX_CONNECTIONS = 32
IDLE_TIMEOUT_S = 30.0
REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Everything the page needs comes from this server: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


def json_error(status: int, message: str) -> Response:
    import json

    return Response(status, json.dumps({"error": message}).encode())


class HttpServer:
    """Serves ``handler`` for GET/HEAD; checks the password first when one is set."""

    def __init__(self, handler: Handler, *, password: str | None) -> None:
        self.handler = handler
        self.password = password
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host or None, port, limit=MAX_HEAD_BYTES)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > MAX_CONNECTIONS:
                await _send(writer, "GET", json_error(503, "too many connections"), keep_alive=False)
                return
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_S):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await _send(writer, "GET", json_error(400, "request head too large"), keep_alive=False)
                    return
                request = _parse(head)
                if request is None:
                    await _send(writer, "GET", json_error(400, "malformed request"), keep_alive=False)
                    return
                keep_alive = request.headers.get("connection", "").lower() != "close"
                if "content-length" in request.headers or "transfer-encoding" in request.headers:
                    keep_alive = False  # a body we will not read: do not parse it as the next request
                response = await self._respond(request)
                await _send(writer, request.method, response, keep_alive=keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b'{"error": "read-only: only GET and HEAD"}', headers={"Allow": "GET, HEAD"})
        if self.password is not None and not _authorised(request.headers.get("authorization", ""), self.password):
            return Response(401, b'{"error": "password required"}',
                            headers={"WWW-Authenticate": 'Basic realm="gateway", charset="UTF-8"'})  # fmt: skip
        try:
            return await self.handler(request)
        except Exception:
            log.exception("status page: %s %s failed", request.method, request.path)
            return json_error(500, "internal error (logged)")


def _authorised(header: str, password: str) -> bool:
    """Basic (any user name) or Bearer, compared in constant time."""
    scheme, _, value = header.partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    return bool(given) and hmac.compare_digest(given.encode(), password.encode())


def _parse(head: bytes) -> Request | None:
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                return None
            headers[name.strip().lower()] = value.strip()
    url = urlsplit(target)
    return Request(method.upper(), url.path, dict(parse_qsl(url.query)), headers)


async def _send(writer: asyncio.StreamWriter, method: str, response: Response, *, keep_alive: bool) -> None:
    headers = {
        "Content-Type": response.content_type,
        "Content-Length": str(len(response.body)),
        "Connection": "keep-alive" if keep_alive else "close",
        **SECURITY_HEADERS,
        **response.headers,
    }
    head = f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'OK')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else response.body))
    await writer.drain()
