"""What a decoder makes of one frame, before the driver stamps it into Readings."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.model import Quality, Value


@dataclass(frozen=True, slots=True)
class Measurement:
    quantity: str
    value: Value
    unit: str
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class Position:
    """A GPS fix, also published to the position registry for other sources."""

    latitude: float
    longitude: float
    altitude: float | None = None


@dataclass(slots=True)
class Decoded:
    """Everything decoded from one chunk of bytes: measurements per frame, errors by kind."""

    frames: list[list[Measurement]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    position: Position | None = None
