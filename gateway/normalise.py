"""The normaliser: the one stage between drivers and the durable buffer.

It gives every reading the source's tags, the canonical unit of its quantity
(converting known aliases such as kW -> W), and drops only what no store can
hold (NaN/inf), counting it. Problems are logged once per (source, device,
quantity, problem), not on every poll.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence

from gateway.metrics import Metrics
from gateway.model import Quality, Reading
from gateway.quantities import QUANTITIES, convert_to_canonical

log = logging.getLogger("gateway.normalise")


class Normaliser:
    def __init__(self, *, driver: str, source: str, source_tags: Mapping[str, str], metrics: Metrics | None) -> None:
        self.driver = driver
        self.source = source
        self.source_tags = dict(source_tags)
        self.metrics = metrics
        self._warned: set[tuple[str, str, str]] = set()

    def _warn_once(self, device: str, quantity: str, problem: str, message: str) -> None:
        key = (device, quantity, problem)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("source %s, device %s, %s: %s", self.source, device, quantity, message)

    def normalise(self, readings: Sequence[Reading]) -> list[Reading]:
        out: list[Reading] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        for r in readings:
            device = r.device or self.source
            changes: dict[str, object] = {}
            if device != r.device:
                changes["device"] = device
            if self.source_tags:
                # The reading's own tags win over the source's defaults.
                changes["tags"] = {**self.source_tags, **r.tags} if r.tags else self.source_tags
            value = r.value
            if isinstance(value, float) and not math.isfinite(value):
                outcomes[(device, "non_finite")] += 1
                self._warn_once(device, r.quantity, "non_finite", f"value {value} cannot be stored; dropped (counted)")
                continue
            outcome = _quality_outcome(r.quality)
            if r.is_numeric and r.unit != (QUANTITIES[r.quantity].unit if r.quantity in QUANTITIES else r.unit):
                converted = convert_to_canonical(r.quantity, float(value), r.unit)
                if converted is None:
                    outcome = "unit_mismatch"
                    self._warn_once(
                        device,
                        r.quantity,
                        "unit",
                        f"unit {r.unit!r} is not the canonical {QUANTITIES[r.quantity].unit!r} and cannot be "
                        "converted; kept as is (fix the profile's unit)",
                    )
                else:
                    changes["value"], changes["unit"] = converted
            out.append(r.with_changes(**changes) if changes else r)
            outcomes[(device, outcome)] += 1
        if self.metrics is not None:
            for (device, outcome), n in outcomes.items():
                self.metrics.readings.labels(self.driver, device, outcome).inc(n)
        return out


def _quality_outcome(quality: Quality) -> str:
    return {Quality.GOOD: "ok", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}[quality]
