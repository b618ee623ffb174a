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

Frames (one device, timestamp and tag set, N values: the Modbus poller's
output) are normalised as a whole, with the same outcome for each value as
its Reading would get: the timestamp, names and tags are checked once per
frame, the quantities, units and unit conversions once per layout (cached in
``FrameFields.memo``), and the finiteness of the values in bulk (their sum is
finite: all are). A frame that loses values becomes ``frame.select(kept)``.
Outcomes count values, not frames.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from prometheus_client import Counter

from gateway.frame import Frame, FrameFields, Item, make_frame
from gateway.metrics import Metrics
from gateway.model import Quality, Value, make_reading
from gateway.quantities import QUANTITIES, convert_to_canonical
from gateway.tags import TagsCache
from gateway.validate import Problem, ReadingValidator

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
        self.observer: Callable[[Sequence[Item]], None] | None = None
        # A reading's tags merged over the source's, per distinct tag set: readings
        # share few tag sets, and merging per reading cost 5 us of the 8 it took.
        defaults = self.source_tags
        self._merged = TagsCache(lambda tags: MappingProxyType({**defaults, **tags}), defaults, max_entries=10_000)
        self._merged_by_id: dict[int, tuple[Mapping[str, str], Mapping[str, str]]] = {}
        self._counters: dict[tuple[str, str], Counter] = {}  # (device, outcome) -> its readings_total child

    def _warn_once(self, device: str, quantity: str, problem: str, message: str) -> None:
        key = (device, quantity, problem)
        if key not in self._warned:
            self._warned.add(key)
            log.warning("source %s, device %s, %s: %s", self.source, device, quantity, message)

    def normalise(self, readings: Sequence[Item]) -> list[Item]:
        """``prepare`` and ``count`` at once (for readings that are not committed one by one)."""
        out, outcomes = self.prepare(readings)
        self.count(outcomes)
        return out

    def count(self, outcomes: Outcomes) -> None:
        """Count readings by outcome: call once they are committed."""
        if self.metrics is not None:
            counters = self._counters
            for key, n in outcomes.items():
                counter = counters.get(key)
                if counter is None:  # a label lookup per device and commit was ~1 % of the daemon's CPU
                    if len(counters) >= _COUNTERS_MAX:  # device names from the air (LoRa): stay bounded
                        counters.clear()
                    counter = counters[key] = self.metrics.readings.labels(self.driver, *key)
                counter.inc(n)

    def prepare(self, readings: Sequence[Item]) -> tuple[list[Item], Outcomes]:
        """The normalised readings and frames (order kept) and their outcomes; what is dropped or refused is
        counted now."""
        return self.prepare_at(readings, time.time_ns())

    def prepare_at(self, readings: Sequence[Item], now_ns: int) -> tuple[list[Item], Outcomes]:
        """``prepare`` with the gateway clock at ``now_ns`` (for the clock-skew check)."""
        out: list[Item] = []
        append = out.append
        outcomes: Outcomes = {}
        dropped: Outcomes = {}
        source = self.source
        merge = self._merged if self.source_tags else None
        problem = self.validator.problem
        for r in readings:
            if isinstance(r, Frame):
                self._frame(r, now_ns, append, outcomes, dropped, merge)
                continue
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

    def _frame(
        self,
        f: Frame,
        now_ns: int,
        append: Callable[[Item], None],
        outcomes: Outcomes,
        dropped: Outcomes,
        merge: TagsCache[MappingProxyType[str, str]] | None,
    ) -> None:
        """Normalise one frame: per frame and per layout, per value only the bulk finiteness check."""
        device = f.device or self.source
        values = f.values
        try:
            total = sum(values)  # type: ignore[arg-type]  # a str value raises: then look at each
            finite = total - total == 0  # inf - inf and NaN - NaN are NaN
        except (TypeError, OverflowError):
            finite = False
        problems = self.validator.frame_problems(f, device, now_ns)
        fields = f.fields
        plan: tuple[tuple[int, str], ...] | None = fields.memo.get(_UNIT_MEMO)
        if plan is None:
            plan = _unit_plan(fields)
        tags = f.tags
        if merge is not None:
            tags = self._merge(tags, merge)
        if finite and problems is None and not plan:  # the common case: nothing to drop, refuse or convert
            if device is not f.device or tags is not f.tags:
                f = make_frame(f.ts_ns, f.site, f.gateway, device, fields, values, tags, f.qualities)
            append(f)
            if f.qualities is None:
                key = (device, "ok")
                outcomes[key] = outcomes.get(key, 0) + len(values)
            else:
                self._count(outcomes, device, f.qualities, range(len(values)), ())
            return
        keep: list[int] | None = None  # positions kept; None: all
        if not finite:
            keep = self._drop_non_finite(f, device, dropped)
        if problems is not None:
            keep = self._refuse_positions(f, device, problems, keep)
        if keep is not None and not keep:
            return
        mismatched: list[int] = []
        if plan:
            values, fields, mismatched = self._convert(f, device, plan, keep)
        frame = make_frame(f.ts_ns, f.site, f.gateway, device, fields, values, tags, f.qualities)
        positions = range(len(values)) if keep is None else keep
        self._count(outcomes, device, f.qualities, positions, mismatched)
        append(frame if keep is None or len(keep) == len(values) else frame.select(keep))

    def _merge(self, tags: Mapping[str, str], merge: TagsCache[MappingProxyType[str, str]]) -> Mapping[str, str]:
        """The tags merged over the source's; by identity for the immutable tag sets that frames share."""
        hit = self._merged_by_id.get(id(tags))
        if hit is not None and hit[0] is tags:
            return hit[1]
        merged = merge(tags)
        if merged == tags:  # the driver merged the source's tags already (Modbus does): keep the frame as it is
            merged = tags  # type: ignore[assignment]
        if not isinstance(tags, dict):  # a dict could change after this
            if len(self._merged_by_id) >= 10_000:
                self._merged_by_id.clear()
            self._merged_by_id[id(tags)] = (tags, merged)  # the reference keeps the id from being reused
        return merged

    @staticmethod
    def _count(
        outcomes: Outcomes,
        device: str,
        qualities: tuple[Quality, ...] | None,
        positions: Sequence[int],
        mismatched: Sequence[int],
    ) -> None:
        if qualities is None and not mismatched:
            key = (device, "ok")
            outcomes[key] = outcomes.get(key, 0) + len(positions)
            return
        if qualities is not None and not mismatched and len(positions) == len(qualities):  # all, in bulk
            for quality, outcome in _OUTCOME.items():
                n = qualities.count(quality)
                if n:
                    key = (device, outcome)
                    outcomes[key] = outcomes.get(key, 0) + n
            return
        for i in positions:
            quality = Quality.GOOD if qualities is None else qualities[i]
            key = (device, "unit_mismatch" if i in mismatched else _OUTCOME[quality])
            outcomes[key] = outcomes.get(key, 0) + 1

    def _drop_non_finite(self, f: Frame, device: str, dropped: Outcomes) -> list[int]:
        keep = []
        for i, value in enumerate(f.values):
            if type(value) is float and not math.isfinite(value):
                key = (device, "non_finite")
                dropped[key] = dropped.get(key, 0) + 1
                self._warn_once(
                    device, f.fields.quantities[i], "non_finite", f"value {value} cannot be stored; dropped (counted)"
                )
            else:
                keep.append(i)
        return keep

    def _refuse_positions(
        self, f: Frame, device: str, problems: Sequence[Problem | None], keep: list[int] | None
    ) -> list[int]:
        kept = []
        for i in range(len(f.values)) if keep is None else keep:
            problem = problems[i]
            if problem is None:
                kept.append(i)
            else:
                self._refuse(device, f.fields.quantities[i], *problem)
        return kept

    def _convert(
        self, f: Frame, device: str, plan: tuple[tuple[int, str], ...], keep: list[int] | None
    ) -> tuple[Sequence[Value], FrameFields, list[int]]:
        """Values, layout and unconvertible positions after unit conversion (only numbers are converted, and only
        the values kept: a dropped value is not also reported for its unit)."""
        values = list(f.values)
        units = list(f.fields.units)
        mismatched = []
        kept = None if keep is None else set(keep)
        for i, canonical in plan:
            if kept is not None and i not in kept:
                continue
            value = values[i]
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            quantity = f.fields.quantities[i]
            converted = convert_to_canonical(quantity, float(value), units[i])
            if converted is None:
                mismatched.append(i)
                self._warn_once(
                    device,
                    quantity,
                    "unit",
                    f"unit {units[i]!r} is not the canonical {canonical!r} and cannot be "
                    "converted; kept as is (fix the profile's unit)",
                )
            else:
                values[i], units[i] = converted
        fields = f.fields if units == list(f.fields.units) else FrameFields.of(f.fields.quantities, units)
        return tuple(values), fields, mismatched

    def _refuse(self, device: str, quantity: str, reason: str, detail: str) -> None:
        if self.metrics is not None:
            self.metrics.readings_refused.labels(self.driver, self.source, reason).inc()
        self._warn_once(
            device if device.isprintable() else repr(device), repr(quantity), reason, f"{detail}; refused (counted)"
        )


_OUTCOME: dict[Quality, str] = {Quality.GOOD: "ok", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}
_CANONICAL_UNIT: dict[str, str] = {name: q.unit for name, q in QUANTITIES.items()}
_UNIT_MEMO = "normalise.units"  # FrameFields.memo key
_COUNTERS_MAX = 10_000


def _unit_plan(fields: FrameFields) -> tuple[tuple[int, str], ...]:
    """(position, canonical unit) of each position whose unit is not its quantity's canonical one; once per
    layout."""
    try:
        return fields.memo[_UNIT_MEMO]  # type: ignore[no-any-return]
    except KeyError:
        pass
    plan = tuple(
        (i, _CANONICAL_UNIT[q])
        for i, (q, unit) in enumerate(zip(fields.quantities, fields.units, strict=True))
        if _CANONICAL_UNIT.get(q, unit) != unit
    )
    fields.memo[_UNIT_MEMO] = plan
    return plan
