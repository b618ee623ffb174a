"""Process-wide registry of the latest GPS fix per source, for position tags.

A mobile unit has one GPS (an ``nmea`` serial source) and several sensors. The
GPS source publishes each fix here under its source name; any driver in the
same daemon can read it, e.g. a serial source with ``position_from = "gps"``
records where its device was as ``latitude``/``longitude`` readings (and, if
asked, coarse ``lat``/``lon`` tags). A fix older than the caller's
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

    def tags(self, source: str, *, max_age_s: float, decimals: int = 6, now: float | None = None) -> dict[str, str]:
        """``lat``/``lon`` tags rounded to ``decimals`` places, or {} without a fresh fix."""
        pos = self.latest(source, max_age_s=max_age_s, now=now)
        if pos is None:
            return {}
        return position_tags(pos, decimals)

    def clear(self) -> None:
        self._latest.clear()


def position_tags(position: Position, decimals: int) -> dict[str, str]:
    """Coarse ``lat``/``lon`` tags: 2 decimals ~ 1 km, 3 ~ 100 m; the series set stays bounded."""
    return {"lat": f"{position.latitude:.{decimals}f}", "lon": f"{position.longitude:.{decimals}f}"}


POSITIONS = PositionRegistry()
"""The daemon-wide registry."""
