"""The status document every gateway publishes (schema ``gateway-status/1``) and its health readings.

Built from the daemon's own status (the dict behind ``status.json``) so the box and the control post
see the same facts. Since-when times are tracked here, on the transitions this module sees, so the
sources and sinks need not keep them. docs/fleet.md documents every field.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.model import Quality, Reading, make_reading
from gateway.tags import EMPTY_TAGS

SCHEMA = "gateway-status/1"
HEALTH_DEVICE = "_gateway"

# quantity -> unit of the gateway's own readings (device "_gateway"; docs/fleet.md)
HEALTH_QUANTITIES: dict[str, str] = {
    "uptime": "s",
    "buffer_readings": "count",
    "buffer_oldest_age": "s",
    "sinks_failing": "count",
    "sources_failing": "count",
    "devices_down": "count",
    "clock_synchronized": "/",
    "duplicate_name": "/",
    "last_reading_age": "s",
    "sink_pending": "count",  # one per sink, tag "sink"
}


def config_digest(path: Path | None) -> str | None:
    """The first 16 hex digits of the config file's SHA-256: which gateways run which config."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


@dataclass(slots=True)
class _Since:
    """When each key entered its current state."""

    states: dict[str, tuple[str, int]] = field(default_factory=dict)

    def see(self, key: str, state: str, now_ns: int) -> int:
        known = self.states.get(key)
        if known is None or known[0] != state:
            self.states[key] = (state, now_ns)
            return now_ns
        return known[1]

    def keep_only(self, keys: set[str]) -> None:
        for gone in set(self.states) - keys:
            del self.states[gone]


@dataclass(slots=True)
class HealthTracker:
    """Turns successive daemon status snapshots into status documents with since-when times."""

    identity: Mapping[str, Any]  # id, short, machine_id, renewed_from
    config_digest: str | None
    _since: _Since = field(default_factory=_Since)
    _readings_seen: dict[str, int] = field(default_factory=dict)
    last_reading_ns: int | None = None

    def document(
        self, status: Mapping[str, Any], *, state: str = "online", duplicate: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        now = time.time_ns()
        since = self._since
        keys: set[str] = set()
        sources: dict[str, Any] = {}
        down_total = 0
        for name, src in status.get("sources", {}).items():
            key = f"source:{name}"
            keys.add(key)
            readings = int(src.get("readings", 0)) + int(src.get("aggregates", 0))
            if readings != self._readings_seen.get(name, 0):
                self._readings_seen[name] = readings
                self.last_reading_ns = now
            down: dict[str, int] = {}
            for dev in src.get("devices_down", []):
                dkey = f"device:{name}/{dev}"
                keys.add(dkey)
                down[dev] = since.see(dkey, "down", now)
            down_total += len(down)
            sources[name] = {
                "state": src.get("state", "unknown"),
                "since_ns": since.see(key, str(src.get("state")), now),
                "error": src.get("error"),
                "devices_down": down,
            }
        buffer = status.get("buffer") or {}
        pending = {n: s for n, s in (buffer.get("sinks") or {}).items()}
        sinks: dict[str, Any] = {}
        for name, snk in status.get("sinks", {}).items():
            key = f"sink:{name}"
            keys.add(key)
            backlog = pending.get(name) or {}
            oldest = backlog.get("oldest_pending_ts_ns")
            sinks[name] = {
                "state": snk.get("state", "unknown"),
                "since_ns": since.see(key, str(snk.get("state")), now),
                "error": snk.get("error"),
                "pending": backlog.get("pending", 0),
                "lag_s": round(max(now - oldest, 0) / 1e9, 1) if oldest else 0.0,
            }
        since.keep_only(keys)
        oldest_ts = buffer.get("oldest_ts_ns")
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "state": state,
            "id": self.identity["id"],
            "site": status.get("site"),
            "name": status.get("gateway"),
            "version": status.get("version"),
            "started_ns": status.get("started_ns"),
            "updated_ns": now,
            "config_digest": self.config_digest,
            "clock_synchronized": status.get("clock_synchronized"),
            "buffer": {
                "readings": buffer.get("readings", 0),
                "bytes": buffer.get("bytes", 0),
                "oldest_age_s": round(max(now - oldest_ts, 0) / 1e9, 1) if oldest_ts else 0.0,
                "dropped": buffer.get("dropped_oldest_total", 0) + buffer.get("dropped_newest_total", 0),
            },
            "sinks": sinks,
            "sources": sources,
            "devices_down": down_total,
            "last_reading_ns": self.last_reading_ns,
            "duplicate": dict(duplicate) if duplicate else None,
            "identity_renewed_from": self.identity.get("renewed_from"),
        }
        doc["problems"] = problems(doc)
        return doc


def problems(doc: Mapping[str, Any]) -> list[str]:
    """Short sentences, worst first, for a control post's table (``gateway fleet``)."""
    found: list[str] = []
    if doc.get("state") != "online":
        found.append(f"gateway {doc.get('state')}")
    if doc.get("duplicate"):
        found.append(f"another gateway uses this name (id {', '.join(doc['duplicate'].get('ids', []))})")
    for name, snk in (doc.get("sinks") or {}).items():
        if snk.get("state") != "ok":
            found.append(f"sink {name} {snk.get('state')}")
    for name, src in (doc.get("sources") or {}).items():
        if src.get("state") != "running":
            found.append(f"source {name} {src.get('state')}")
        if src.get("devices_down"):
            found.append(f"source {name}: {len(src['devices_down'])} device(s) down")
    if doc.get("clock_synchronized") is False:
        found.append("clock not synchronised")
    return found


def change_signature(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a status worth publishing at once: states, not counters (those go at the steady interval)."""
    return (
        doc.get("state"),
        doc.get("clock_synchronized"),
        bool(doc.get("duplicate")),
        tuple(sorted((n, s.get("state")) for n, s in (doc.get("sinks") or {}).items())),
        tuple(
            sorted(
                (n, s.get("state"), tuple(sorted(s.get("devices_down") or {})))
                for n, s in (doc.get("sources") or {}).items()
            )
        ),
    )


def health_readings(doc: Mapping[str, Any], *, site: str, gateway: str) -> list[Reading]:
    """The status as readings of device ``_gateway``, for a control post that has only a time-series store."""
    ts = int(doc["updated_ns"])

    def r(quantity: str, value: float | int, tags: Mapping[str, str] = EMPTY_TAGS) -> Reading:
        return make_reading(ts, site, gateway, HEALTH_DEVICE, quantity, value, HEALTH_QUANTITIES[quantity], tags,
                            Quality.GOOD)  # fmt: skip

    started = doc.get("started_ns") or ts
    last = doc.get("last_reading_ns")
    sinks = doc.get("sinks") or {}
    sources = doc.get("sources") or {}
    out = [
        r("uptime", round((ts - started) / 1e9, 1)),
        r("buffer_readings", int(doc["buffer"]["readings"])),
        r("buffer_oldest_age", float(doc["buffer"]["oldest_age_s"])),
        r("sinks_failing", sum(1 for s in sinks.values() if s.get("state") != "ok")),
        r("sources_failing", sum(1 for s in sources.values() if s.get("state") != "running")),
        r("devices_down", int(doc.get("devices_down", 0))),
        r("duplicate_name", 1 if doc.get("duplicate") else 0),
    ]
    if doc.get("clock_synchronized") is not None:
        out.append(r("clock_synchronized", 1 if doc["clock_synchronized"] else 0))
    if last is not None:
        out.append(r("last_reading_age", round(max(ts - last, 0) / 1e9, 1)))
    out.extend(r("sink_pending", int(s.get("pending", 0)), {"sink": name}) for name, s in sinks.items())
    return out


def status_lines(status: Mapping[str, Any]) -> list[str]:
    """The fleet lines of ``gateway status``: identity, the status connection, a duplicate name."""
    lines = []
    if status.get("identity"):
        phase = status.get("poll_phase", 0)
        lines.append(f"identity: {status['identity'][:8]}, polls at {phase:.3f} of each interval (poll phase)")
    fleet = status.get("fleet") or {}
    if fleet.get("topic"):
        state = "connected" if fleet.get("connected") else f"NOT CONNECTED ({fleet.get('error') or 'connecting'})"
        lines.append(f"fleet status: {state}, topic {fleet['topic']}")
    duplicate = fleet.get("duplicate")
    if duplicate:
        lines.append(
            f"DUPLICATE NAME: another running gateway publishes under this name (identity "
            f"{', '.join(duplicate.get('ids', []))}): give each box its own [gateway] name"
        )
    return lines
