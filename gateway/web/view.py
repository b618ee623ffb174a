"""What the status page shows, computed once a second from the daemon's status and the history.

The daemon's ``status()`` says what is true now (source and sink states, buffer
stats); this adds what needs memory of the last seconds: since when a device is
down, its availability over the last hour, sent/s and time to drain of each
sink, poll latency, and the overall green / amber / red with its reasons.
The tick keeps only what needs observing every second and costs per device,
not per series; the series' values and the JSON are rendered when a client asks,
at most once per tick (a second client in the same second gets the same bytes),
so a gateway nobody looks at pays nothing per value for its page. Only listed
fields are copied from the daemon's status: a sink's own status (URLs, paths)
never reaches the page.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.model import Quality
from gateway.web.history import SeriesHistory

API_VERSION = 1
_QUALITY = {q: q.name.lower() for q in Quality}  # the page renders one per series
RATE_WINDOW_S = 10.0
AVAILABILITY_WINDOW_S = 3600
BACKLOG_AMBER_S = 120.0
RECENT_S = 600.0
KEEPING_UP_S = 10.0  # a healthy sink whose oldest pending reading is younger than this keeps up
BUFFER_SERIES = ("gateway", "buffer", "buffer_depth")

# Python exception names a technician should not have to read.
_PLAIN = (
    ("TimeoutError", "no answer in time"),
    ("ConnectionRefusedError", "connection refused (is the device or converter powered and reachable?)"),
    ("ConnectionResetError", "connection dropped by the other side"),
    ("FileNotFoundError", "port or file not found (unplugged?)"),
    ("PermissionError", "permission denied"),
    ("SerialException", "serial port error (unplugged?)"),
    ("OSError", "operating system error"),
)


def plain_words(error: str | None) -> str | None:
    """``"poll: TimeoutError: "`` -> ``"no answer in time"``; keeps the detail when there is one."""
    if not error:
        return error
    for name, words in _PLAIN:
        if name in error:
            detail = error.split(f"{name}:", 1)[-1].strip()
            return f"{words}: {detail}" if detail and detail != error else words
    return error


class _UpWindow:
    """Fraction of one-second samples a device was up, over the last hour (one byte a sample)."""

    __slots__ = ("buf", "filled", "i", "ups")

    def __init__(self, size: int = AVAILABILITY_WINDOW_S) -> None:
        self.buf = bytearray(size)
        self.i = self.filled = self.ups = 0

    def add(self, up: bool) -> None:
        if self.filled == len(self.buf):
            self.ups -= self.buf[self.i]
        else:
            self.filled += 1
        self.buf[self.i] = 1 if up else 0
        self.ups += self.buf[self.i]
        self.i = (self.i + 1) % len(self.buf)

    @property
    def ratio(self) -> float | None:
        return self.ups / self.filled if self.filled else None


class _Rate:
    """Per-second rate of a growing counter over the last few seconds."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, total: int, *, latest_only: bool = False) -> float | None:
        """The rate over the window, or over the last second only (a sink that just failed sends nothing now)."""
        self.samples.append((t, total))
        while len(self.samples) > 2 and t - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        (t0, v0), (t1, v1) = self.samples[-2 if latest_only and len(self.samples) > 1 else 0], self.samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else None


class StatusView:
    def __init__(
        self,
        *,
        status: Callable[[], dict[str, Any]],
        history: SeriesHistory,
    ) -> None:
        self.status = status
        self.history = history
        self._down_since: dict[tuple[str, str], int] = {}
        self._up: dict[tuple[str, str], _UpWindow] = {}
        self._sent: dict[str, _Rate] = {}
        self._ingest = _Rate()
        self._latency: dict[str, tuple[float, float, float | None]] = {}
        self._drops: deque[tuple[float, int]] = deque()
        self._dead: deque[tuple[float, int]] = deque()
        self._tick: dict[str, Any] = {}  # the tick's findings, without the series values
        self._data: dict[str, Any] | None = None  # rendered from _tick on the first request after a tick
        self._payload: bytes | None = None

    def tick(self, status: dict[str, Any] | None = None) -> None:
        """What must be observed every second (rates, availability, down-since, latency, the rings).

        ``status`` is the daemon's status of this second when the caller has it
        (the daemon computes it once a second for status.json too); without it
        the view asks for one. Costs per device and per frame that arrived, not
        per series, and builds nothing a client has not asked for: the sources'
        and devices' dicts, the overall state, the series' values and the JSON
        are made from these observations when a client asks (``payload``).
        """
        now_ns = time.time_ns()
        now = time.monotonic()
        self.history.sample(now_ns)
        if status is None:
            status = self.status()
        buffer = status.get("buffer")
        if buffer is not None:
            self.history.record(BUFFER_SERIES, "readings", float(buffer["readings"]), now_ns)
        ingest = self._ingest.add(now, self.history.observed_total)
        self._tick = {
            "status": status,
            "now_ns": now_ns,
            "ingest_per_s": ingest,
            "sources": [self._observe(name, s, now_ns) for name, s in status.get("sources", {}).items()],
            "sinks": [self._sink(name, s, buffer, ingest, now) for name, s in status.get("sinks", {}).items()],
            "buffer": self._buffer(buffer, now_ns, now),
        }
        self._data = self._payload = None

    @property
    def payload(self) -> bytes:
        """/api/status as JSON, rendered at most once per tick and only when asked."""
        if self._payload is None:
            self._payload = json.dumps(self.data, separators=(",", ":")).encode()
        return self._payload

    @property
    def data(self) -> dict[str, Any]:
        """/api/status as a dict (what ``payload`` encodes), rendered at most once per tick."""
        if self._data is None:
            self._data = self._render()
        return self._data

    def _render(self) -> dict[str, Any]:
        """The tick's findings with the newest value of every series of the devices it saw."""
        tick = self._tick
        if not tick:
            return {}
        status, now_ns = tick["status"], tick["now_ns"]
        sources = []
        for observed in tick["sources"]:
            src = self._source(*observed)
            by_device: dict[str, list[dict[str, Any]]] = {d["name"]: [] for d in src["devices"]}
            name = src["name"]
            for r in self.history.latest_points(name):
                series = by_device.get(r.device)
                if series is not None:  # a device newer than the tick waits for the next one
                    series.append({
                        "id": f"{name}/{r.device}/{r.quantity}",
                        "quantity": r.quantity,
                        "unit": r.unit,
                        "value": r.value,
                        "ts_ns": r.ts_ns,
                        "quality": _QUALITY[r.quality],
                    })  # fmt: skip
            devices = []
            for d in src["devices"]:
                series = sorted(by_device[d["name"]], key=lambda x: x["quantity"])
                last = max((x["ts_ns"] for x in series), default=None)
                devices.append({**d, "last_reading_ns": last, "series": series})
            last_source = max((d["last_reading_ns"] or 0 for d in devices), default=0) or None
            sources.append({**src, "last_reading_ns": last_source, "devices": devices})
        data = {
            "api": API_VERSION,
            "site": status.get("site"),
            "gateway": status.get("gateway"),
            "version": status.get("version"),
            "started_ns": status.get("started_ns"),
            "now_ns": now_ns,
            "uptime_s": (now_ns - int(status.get("started_ns") or now_ns)) / 1e9,
            "clock_synchronized": status.get("clock_synchronized"),
            "ingest_per_s": tick["ingest_per_s"],
            "history": {"bytes": self.history.ring_bytes, "series_without_plot": self.history.series_without_rings},
            "sources": sources,
            "buffer": tick["buffer"],
            "sinks": tick["sinks"],
        }
        data["overall"] = overall(data)
        return data

    def _observe(
        self, name: str, s: dict[str, Any], now_ns: int
    ) -> tuple[str, dict[str, Any], list[tuple[str, bool, _UpWindow]], float | None]:
        """A source's observations of this second: which devices are down, since when, their availability,
        the poll latency; the dicts of the page are made from them only when a client asks (``_source``)."""
        down: list[str] = s.get("devices_down") or []
        failing = s.get("state") == "failing"
        devices = self.history.devices(name)
        if down:
            devices = devices | set(down)
        seen: list[tuple[str, bool, _UpWindow]] = []
        for device in devices:
            key = (name, device)
            is_down = failing or (bool(down) and device in down)  # most sources: nothing down, no scan
            if is_down:
                self._down_since.setdefault(key, now_ns)
            elif self._down_since:
                self._down_since.pop(key, None)
            window = self._up.get(key)
            if window is None:
                window = self._up[key] = _UpWindow()
            window.add(not is_down)
            seen.append((device, is_down, window))
        return name, s, seen, self._recent_latency(name, s)

    def _source(
        self, name: str, s: dict[str, Any], seen: list[tuple[str, bool, _UpWindow]], latency: float | None
    ) -> dict[str, Any]:
        """A source's state and its devices' (up or down, since when, availability); no series."""
        reasons = s.get("down_reasons") or {}
        state = s.get("state")
        out: list[dict[str, Any]] = []
        for device, is_down, window in sorted(seen, key=lambda d: d[0]):
            dev_state = "down" if is_down else ("restarting" if state == "restarting" else "up")
            out.append({
                "name": device,
                "state": dev_state,
                "down_since_ns": self._down_since.get((name, device)) if is_down else None,
                "error": plain_words(reasons.get(device) or (s.get("error") if is_down else None))
                or ("not answering" if is_down else None),
                "availability": window.ratio,
                "last_reading_ns": None,  # these two are filled in when the page is rendered
                "series": [],
            })  # fmt: skip
        return {
            "name": name,
            "driver": s.get("driver"),
            "state": state,
            "error": plain_words(s.get("error")),
            "restarts": s.get("restarts", 0),
            "readings": s.get("readings", 0),
            "last_reading_ns": None,  # filled in when the page is rendered
            "poll_latency_s": latency,
            "devices": out,
        }

    def _recent_latency(self, source: str, s: dict[str, Any]) -> float | None:
        """Mean poll duration since the previous tick; the last known one when no poll happened."""
        if "polls" not in s:
            return None
        total, count = float(s["poll_seconds_total"]), float(s["polls"])
        before = self._latency.get(source)
        latest = before[2] if before else (total / count if count else None)
        if before is not None and count > before[1]:
            latest = (total - before[0]) / (count - before[1])
        self._latency[source] = (total, count, latest)
        return latest

    def _buffer(self, b: dict[str, Any] | None, now_ns: int, now: float) -> dict[str, Any] | None:
        if b is None:
            return None
        dropped = int(b["dropped_oldest_total"]) + int(b["dropped_newest_total"])
        oldest = b.get("oldest_ts_ns")
        return {
            "readings": b["readings"],
            "bytes": b["bytes"],
            "file_bytes": b.get("file_bytes"),
            "oldest_ts_ns": oldest,
            "oldest_age_s": (now_ns - oldest) / 1e9 if oldest else None,
            "dropped_oldest_total": b["dropped_oldest_total"],
            "dropped_newest_total": b["dropped_newest_total"],
            "dropped_recently": _recent_increase(self._drops, now, dropped),
            "dead_letters_total": b.get("dead_letters_total", 0),
            "dead_lettered_recently": _recent_increase(self._dead, now, int(b.get("dead_letters_total", 0))),
            "series_id": "/".join(BUFFER_SERIES),
        }

    def _sink(
        self, name: str, s: dict[str, Any], buffer: dict[str, Any] | None, ingest: float | None, now: float
    ) -> dict[str, Any]:
        rate = self._sent.get(name)
        if rate is None:
            rate = self._sent[name] = _Rate()
        sent_per_s = rate.add(now, int(s.get("sent", 0)), latest_only=s.get("state") != "ok")
        per_sink = ((buffer or {}).get("sinks") or {}).get(name) or {}
        backlog = per_sink.get("pending")
        oldest = per_sink.get("oldest_pending_ts_ns")
        lag_s = (time.time_ns() - oldest) / 1e9 if backlog and oldest else 0.0
        drain_s: float | None = None
        if backlog == 0 or (s.get("state") == "ok" and lag_s < KEEPING_UP_S):
            drain_s = 0.0  # what is pending is the last few seconds' readings, in flight
        elif backlog and sent_per_s is not None and s.get("state") == "ok":
            net = sent_per_s - (ingest or 0.0)
            drain_s = backlog / net if net > 0 else None  # None: not draining
        return {
            "name": name,
            "type": s.get("type"),
            "state": s.get("state"),
            "error": plain_words(s.get("error")),
            "sent": s.get("sent", 0),
            "sent_per_s": sent_per_s,
            "backlog": backlog,
            "lag_s": lag_s,
            "drain_s": drain_s,
            "dead_letters": per_sink.get("dead_letters", s.get("dead_lettered", 0)),
            "last_success_ns": s.get("last_success_ns"),
        }


def _recent_increase(samples: deque[tuple[float, int]], now: float, total: int) -> int:
    samples.append((now, total))
    while len(samples) > 1 and now - samples[0][0] > RECENT_S:
        samples.popleft()
    return total - samples[0][1]


def overall(data: dict[str, Any]) -> dict[str, Any]:
    """Red: something is lost or not collected now. Amber: it works, but look at it."""
    red: list[str] = []
    amber: list[str] = []
    for src in data["sources"]:
        if src["state"] == "failing":
            red.append(f"source {src['name']} failing: {src['error']}")
        elif src["state"] == "restarting":
            amber.append(f"source {src['name']} restarting")
        for dev in src["devices"]:
            if dev["state"] == "down" and src["state"] != "failing":
                red.append(f"device {dev['name']} down: {dev['error']}")
    for sink in data["sinks"]:
        if sink["state"] != "ok":
            red.append(f"sink {sink['name']} not delivering: {sink['error']}")
    buf = data["buffer"]
    if buf is not None:
        if buf["dropped_recently"]:
            red.append(f"buffer full: {buf['dropped_recently']} readings dropped in the last 10 minutes")
        if buf["oldest_age_s"] is not None and buf["oldest_age_s"] > BACKLOG_AMBER_S:
            amber.append(f"backlog of {buf['readings']} readings, oldest {buf['oldest_age_s']:.0f} s old")
        if buf["dead_lettered_recently"]:
            amber.append(f"{buf['dead_lettered_recently']} readings refused by a sink in the last 10 minutes")
    if data["clock_synchronized"] is False:
        amber.append("clock not synchronised (no NTP yet?)")
    if red:
        return {"state": "red", "reasons": red + amber}
    if amber:
        return {"state": "amber", "reasons": amber}
    return {"state": "green", "reasons": []}
