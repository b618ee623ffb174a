"""The status page's routes (docs/web.md) and its once-a-second refresh, on the daemon's own loop.

The daemon ticks the page's view once a second with the status it has just computed for status.json
(one status a second for both); the page ticks on its own only when the daemon has not for a while.

GET /                      the page (static files shipped in gateway/web/static)
GET /api/status            everything the page shows (gateway/web/view.py), rendered when asked, once a second at most
GET /api/series            the series: source, device, quantity, unit
GET /api/series/points     one series' points: ?source=&device=&quantity=&from=&to= (ns since the epoch)
GET /api/sparklines        the last hour of every series from the in-memory ring
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.config_types import SecretError, resolve_secret
from gateway.metrics import Metrics
from gateway.web.history import HOUR_NS, SeriesHistory
from gateway.web.http import HttpServer, Request, Response, json_error
from gateway.web.store import store_points
from gateway.web.view import StatusView

log = logging.getLogger("gateway.web")

TICK_S = 1.0
FALLBACK_AFTER_S = 2.5  # no tick from the daemon for this long: the page ticks on its own
MAX_PLOT_POINTS = 720
STATIC = {"/": "index.html", "/app.js": "app.js", "/app.css": "app.css", "/favicon.svg": "favicon.svg"}
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
         "css": "text/css; charset=utf-8", "svg": "image/svg+xml"}  # fmt: skip


def read_password(password_file: Path | None) -> str | None:
    """The page's password, from a file (relative to $CREDENTIALS_DIRECTORY); raises SecretError."""
    if password_file is None:
        return None
    return resolve_secret(value=None, file=password_file, env=None, what="web.password_file")


class WebServer:
    def __init__(self, view: StatusView, history: SeriesHistory, *, password: str | None, store: Path | None) -> None:
        self.view = view
        self.history = history
        self.store = store  # the local sink's file: history comes from it when there is one
        self.http = HttpServer(self.handle, password=password)
        self.port: int | None = None
        self._static = _load_static()
        self._ticker: asyncio.Task[None] | None = None
        self._ticked = time.monotonic()
        self._failing = False

    async def start(self, listen: str) -> int:
        host, _, port = listen.rpartition(":")
        self.tick()
        self.port = await self.http.start(host.strip("[]"), int(port))
        self._ticker = asyncio.create_task(self._tick_forever(), name="web-status")
        return self.port

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.http.close()

    def tick(self, status: dict[str, Any] | None = None) -> None:
        """Refresh what the page shows; the daemon calls it once a second with the status it has just made."""
        self._ticked = time.monotonic()
        try:
            self.view.tick(status)
        except Exception:  # the page must never stop the daemon; say so once
            if not self._failing:
                log.exception("status page: cannot refresh the status; the page shows the last one")
            self._failing = True
        else:
            if self._failing:
                log.warning("status page: refreshing again")
            self._failing = False

    async def _tick_forever(self) -> None:
        """The fallback: when the daemon has not ticked the page for a while (its loop waits on a slow
        buffer), the page refreshes itself with a status of its own, so it keeps showing devices and sinks."""
        while True:
            await asyncio.sleep(TICK_S)
            if time.monotonic() - self._ticked >= FALLBACK_AFTER_S:
                self.tick()

    async def handle(self, request: Request) -> Response:
        path = request.path
        if path in STATIC:
            return self._static_file(STATIC[path], request)
        if path == "/api/status":
            return Response(200, self.view.payload, headers={"Cache-Control": "no-store"})
        if path == "/api/series":
            return _json({"series": [
                {"id": f"{s.source}/{s.device}/{s.quantity}", "source": s.source, "device": s.device,
                 "quantity": s.quantity, "unit": s.unit} for s in self.history.series()]})  # fmt: skip
        if path == "/api/sparklines":
            return self._sparklines()
        if path == "/api/series/points":
            return await self._points(request.query)
        return json_error(404, f"no such page: {path}")

    def _static_file(self, name: str, request: Request) -> Response:
        body, etag = self._static[name]
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(304, b"", TYPES[name.rsplit(".", 1)[1]], headers)
        return Response(200, body, TYPES[name.rsplit(".", 1)[1]], headers)

    def _sparklines(self) -> Response:
        now = time.time_ns()
        out: dict[str, Any] = {}
        for s in self.history.series():
            points = self.history.points((s.source, s.device, s.quantity), now - HOUR_NS, now)
            if points:
                out[f"{s.source}/{s.device}/{s.quantity}"] = [[t // 1_000_000, v] for t, v in points]
        return _json({"step_s": self.history.step_s, "from_ms": (now - HOUR_NS) // 1_000_000,
                      "to_ms": now // 1_000_000, "series": out})  # fmt: skip

    async def _points(self, q: dict[str, str]) -> Response:
        try:
            key = (q["source"], q["device"], q["quantity"])
            to_ns = int(q.get("to") or time.time_ns())
            from_ns = int(q.get("from") or to_ns - HOUR_NS)
        except (KeyError, ValueError):
            return json_error(400, "give source, device, quantity, and optionally from and to in ns since the epoch")
        if not 0 <= from_ns <= to_ns:
            return json_error(400, "from must be before to")
        series = self.history.get(key)
        if series is None:
            return json_error(404, "no such series")
        origin = "memory"
        if self.store is not None and key[0] != "gateway":
            points = await asyncio.to_thread(store_points, self.store, key[1], key[2], from_ns, to_ns, MAX_PLOT_POINTS)
            origin = "local store"
        else:
            points = self.history.points(key, from_ns, to_ns)
        return _json({"source": key[0], "device": key[1], "quantity": key[2], "unit": series.unit, "from": from_ns,
                      "to": to_ns, "origin": origin, "points": [[t // 1_000_000, v] for t, v in points]})  # fmt: skip


def _json(data: dict[str, Any]) -> Response:
    return Response(200, json.dumps(data, separators=(",", ":")).encode(), headers={"Cache-Control": "no-store"})


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once (a few tens of KB) from inside the package."""
    folder = resources.files("gateway.web") / "static"
    out = {}
    for name in STATIC.values():
        body = (folder / name).read_bytes()
        out[name] = (body, '"' + hashlib.sha1(body).hexdigest()[:16] + '"')
    return out


async def start_web(
    *, config: Config, status: Callable[[], dict[str, Any]], history: SeriesHistory, metrics: Metrics | None
) -> WebServer | None:
    """Start the page if ``[web]`` enables it; a problem is logged and the daemon runs without the page."""
    web = config.base.web
    if not web.enabled:
        return None
    try:
        password = read_password(web.password_file)
    except SecretError as exc:
        log.error("status page not started: %s", exc)
        return None

    view = StatusView(status=status, history=history)
    server = WebServer(view, history, password=password, store=local_store_path(config))
    try:
        port = await server.start(web.listen)
    except OSError as exc:
        log.error("cannot serve the status page on %s: %s; running without it", web.listen, exc)
        await server.close()
        return None
    host = web.listen.rpartition(":")[0]
    log.info("status page on http://%s:%d/%s", host or "0.0.0.0", port, " (password required)" if password else "")
    return server


def local_store_path(config: Config) -> Path | None:
    for loaded in config.sinks:
        if loaded.config.enabled and loaded.config.type == "local":
            path = getattr(loaded.config, "path", None)
            return Path(path) if path else config.base.gateway.state_dir / "local.sqlite"
    return None
