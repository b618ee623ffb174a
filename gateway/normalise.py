"""The normaliser: the one stage between drivers and the durable buffer.

It gives every reading the source's tags, the canonical unit of its quantity
(converting known aliases such as kW -> W), and drops only what no store can
hold (NaN/inf), counting it. Problems are logged once per (source, device,
quantity, problem), not on every poll.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from gateway.metrics import Metrics
from gateway.model import Quality, Reading, make_reading
from gateway.quantities import QUANTITIES, convert_to_canonical
from gateway.tags import TagsCache

log = logging.getLogger("gateway.normalise")


class Normaliser:
    def __init__(self, *, driver: str, source: str, source_tags: Mapping[str, str], metrics: Metrics | None) -> None:
        self.driver = driver
        self.source = source
        self.source_tags: Mapping[str, str] = MappingProxyType(dict(source_tags))
        self.metrics = metrics
        self._warned: set[tuple[str, str, str]] = set()
        # Sees every normalised batch (the status page's recent values, gateway/web/history.py); must be cheap.
        self.observer: Callable[[Sequence[Reading]], None] | None = None
        # A reading's tags merged over the source's, per distinct tag set: readings
        # share few tag sets, and merging per reading cost 5 us of the 8 it took.
        defaults = self.source_tags
        self._merged = TagsCache(lambda tags: MappingProxyType({**defaults, **tags}), defaults, max_entries=10_000)

    def _warn_once(self, device: str, quantity: str, problem: str, message: str) -> None:
        key = (device, quantity, problem)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("source %s, device %s, %s: %s", self.source, device, quantity, message)

    def normalise(self, readings: Sequence[Reading]) -> list[Reading]:
        out: list[Reading] = []
        append = out.append
        outcomes: dict[tuple[str, str], int] = {}
        source = self.source
        merge = self._merged if self.source_tags else None
        for r in readings:
            device = r.device or source
            value = r.value
            if type(value) is float and not math.isfinite(value):
                key = (device, "non_finite")
                outcomes[key] = outcomes.get(key, 0) + 1
                self._warn_once(device, r.quantity, "non_finite", f"value {value} cannot be stored; dropped (counted)")
                continue
            outcome = _OUTCOME[r.quality]
            unit = r.unit
            canonical = _CANONICAL_UNIT.get(r.quantity, unit)
            tags = merge(r.tags) if merge is not None else r.tags
            if unit != canonical and isinstance(value, int | float) and not isinstance(value, bool):
                converted = convert_to_canonical(r.quantity, float(value), unit)
                if converted is None:
                    outcome = "unit_mismatch"
                    self._warn_once(
                        device,
                        r.quantity,
                        "unit",
                        f"unit {unit!r} is not the canonical {canonical!r} and cannot be "
                        "converted; kept as is (fix the profile's unit)",
                    )
                else:
                    value, unit = converted
            if device is r.device and tags is r.tags and unit is r.unit and value is r.value:
                append(r)
            else:
                append(make_reading(r.ts_ns, r.site, r.gateway, device, r.quantity, value, unit, tags, r.quality))
            key = (device, outcome)
            outcomes[key] = outcomes.get(key, 0) + 1
        if self.metrics is not None:
            for (device, outcome), n in outcomes.items():
                self.metrics.readings.labels(self.driver, device, outcome).inc(n)
        if self.observer is not None:
            self.observer(out)
        return out


_OUTCOME: dict[Quality, str] = {Quality.GOOD: "ok", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}
_CANONICAL_UNIT: dict[str, str] = {name: q.unit for name, q in QUANTITIES.items()}
