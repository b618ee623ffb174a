"""The one type that travels between stages: driver -> normaliser -> buffer -> sinks."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

Value = float | int | bool | str

_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


class Quality(enum.IntEnum):
    """How far a value can be trusted. Stored as a small int in the buffer."""

    GOOD = 0
    UNCERTAIN = 1  # e.g. a sensor warming up, a stale GPS fix
    BAD = 2  # out of the valid range, failed plausibility; kept, never dropped silently


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one device at one instant.

    ``ts_ns`` is nanoseconds since the Unix epoch, UTC. ``quantity`` and ``unit``
    are canonical names (see ``gateway.quantities`` and docs/data-model.md).
    ``tags`` must not be mutated after construction (it is excluded from hashing).
    """

    ts_ns: int
    site: str
    gateway: str
    device: str
    quantity: str
    value: Value
    unit: str
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TAGS, hash=False)
    quality: Quality = Quality.GOOD

    def with_changes(self, **changes: object) -> Reading:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_numeric(self) -> bool:
        return isinstance(self.value, int | float) and not isinstance(self.value, bool)

    @property
    def is_finite(self) -> bool:
        return not (isinstance(self.value, float) and not math.isfinite(self.value))


def now_ns() -> int:
    return time.time_ns()
