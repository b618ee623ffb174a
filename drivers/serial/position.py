"""Process-wide registry of the latest GPS fix per source, for position tags.

A mobile unit has one GPS (an ``nmea`` serial source) and several sensors. The
GPS source publishes each fix here under its source name; any driver in the
same daemon can read it, e.g. a serial source with ``position_from = "gps"``
tags its readings with ``lat``/``lon``. A fix older than the caller's
``max_age_s`` is ignored, so a GPS that lost its fix does not stamp an old
place on new readings.

The daemon runs all drivers on one asyncio loop, so a plain dict is enough.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .measurement import Position


@dataclass(frozen=True, slots=True)
class StampedPosition:
    position: Position
    monotonic_s: float


class PositionRegistry:
    def __init__(self) -> None:
        self._latest: dict[str, StampedPosition] = {}

    def publish(self, source: str, position: Position, *, now: float | None = None) -> None:
        self._latest[source] = StampedPosition(position, time.monotonic() if now is None else now)

    def latest(self, source: str, *, max_age_s: float, now: float | None = None) -> Position | None:
        stamped = self._latest.get(source)
        if stamped is None:
            return None
        now = time.monotonic() if now is None else now
        return stamped.position if now - stamped.monotonic_s <= max_age_s else None

    def tags(self, source: str, *, max_age_s: float, now: float | None = None) -> dict[str, str]:
        """``lat``/``lon`` tags (decimal degrees, 6 places ~ 0.1 m), or {} without a fresh fix."""
        pos = self.latest(source, max_age_s=max_age_s, now=now)
        if pos is None:
            return {}
        return {"lat": f"{pos.latitude:.6f}", "lon": f"{pos.longitude:.6f}"}

    def clear(self) -> None:
        self._latest.clear()


POSITIONS = PositionRegistry()
"""The daemon-wide registry."""
