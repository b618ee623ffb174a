"""The normaliser: the one stage between drivers and the durable buffer.

It gives every reading the source's tags, the canonical unit of its quantity
(converting known aliases such as kW -> W), and drops only what no store can
hold, counting it: NaN/inf (``gateway_readings{outcome="non_finite"}``), and a
reading with a timestamp or a name no store can take (``gateway/validate.py``,
``gateway_readings_refused{driver,source,reason}``), alone, so that it never
fails the group commit of every source. Problems are logged once per (source,
device, quantity, problem), not on every poll.

The other outcomes are counted only once the readings are committed
(``prepare`` then ``count``): a reading whose commit failed did not reach the buffer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from gateway.metrics import Metrics
from gateway.model import Quality, Reading, make_reading
from gateway.quantities import QUANTITIES, convert_to_canonical
from gateway.tags import TagsCache
from gateway.validate import ReadingValidator

Outcomes = dict[tuple[str, str], int]  # (device, outcome) -> readings

log = logging.getLogger("gateway.normalise")


class Normaliser:
    def __init__(self, *, driver: str, source: str, source_tags: Mapping[str, str], metrics: Metrics | None) -> None:
        self.driver = driver
        self.source = source
        self.source_tags: Mapping[str, str] = MappingProxyType(dict(source_tags))
        self.metrics = metrics
        self._warned: set[tuple[str, str, str]] = set()
        self.validator = ReadingValidator()
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
        """``prepare`` and ``count`` at once (for readings that are not committed one by one)."""
        out, outcomes = self.prepare(readings)
        self.count(outcomes)
        return out

    def count(self, outcomes: Outcomes) -> None:
        """Count readings by outcome: call once they are committed."""
        if self.metrics is not None:
            for (device, outcome), n in outcomes.items():
                self.metrics.readings.labels(self.driver, device, outcome).inc(n)

    def prepare(self, readings: Sequence[Reading]) -> tuple[list[Reading], Outcomes]:
        """The normalised readings and their outcomes; what is dropped or refused is counted now."""
        out: list[Reading] = []
        append = out.append
        outcomes: Outcomes = {}
        dropped: Outcomes = {}
        source = self.source
        merge = self._merged if self.source_tags else None
        problem = self.validator.problem
        now_ns = time.time_ns()
        for r in readings:
            device = r.device or source
            value = r.value
            if type(value) is float and not math.isfinite(value):
                key = (device, "non_finite")
                dropped[key] = dropped.get(key, 0) + 1
                self._warn_once(device, r.quantity, "non_finite", f"value {value} cannot be stored; dropped (counted)")
                continue
            refused = problem(r, device, now_ns)
            if refused is not None:
                self._refuse(device, r.quantity, *refused)
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
        if dropped:
            self.count(dropped)
        if self.observer is not None:
            self.observer(out)
        return out, outcomes

    def _refuse(self, device: str, quantity: str, reason: str, detail: str) -> None:
        if self.metrics is not None:
            self.metrics.readings_refused.labels(self.driver, self.source, reason).inc()
        self._warn_once(
            device if device.isprintable() else repr(device), repr(quantity), reason, f"{detail}; refused (counted)"
        )


_OUTCOME: dict[Quality, str] = {Quality.GOOD: "ok", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}
_CANONICAL_UNIT: dict[str, str] = {name: q.unit for name, q in QUANTITIES.items()}
