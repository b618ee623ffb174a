"""Recent values for the status page: the last reading of every series and two bounded rings of points.

Fed by the normaliser of each source (``SeriesHistory.observer``): on the hot
path a reading costs one dict store (the newest reading of its series wins), so
the pipeline's ~60k readings/s do not notice it (bench/bench_web.py measures it).
A frame is not expanded: each of its series keys points at the frame (one
``dict.update`` from precomputed keys), and a Reading is made only when the
page looks at it. Each item is also noted as pending, one entry per device and
layout (one more dict store), so that once a second ``sample()`` looks only at
the frames that arrived, not at every series, and copies each frame's values
into its series' rings in one pass:

- the hour ring: one point per ``step_s`` (default 10 s, 360 points for an hour);
- the day ring: one point per 2 minutes, 720 points for 24 hours.

A point is the last value of its step, stamped with the step's start. A ring is
two preallocated arrays (bucket number, value): 16 bytes a point, so a numeric
series costs about 17 KB with the defaults and 100 series under 2 MB, whatever
the reading rate. Text values keep only their last reading, no ring.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

from gateway.frame import Frame, FrameFields, Item
from gateway.model import Quality, Reading, Value, make_reading

log = logging.getLogger("gateway.web")

HOUR_NS = 3600 * 10**9
MAX_RING_BYTES = 16 * 1024**2  # ~970 series with the defaults; a site with more sees the rest without plots
DAY_STEP_S = 120.0
DAY_POINTS = 720
MAX_LAYOUTS = 100_000  # (source, device, layout) entries of the sampler's cache; 100 x 500 in frames of 40 is 1,300

SeriesKey = tuple[str, str, str]  # source, device, quantity
Latest = Reading | Frame  # a frame stands for its value of the series
_KEYS_MEMO = "web.history.keys"  # FrameFields.memo: device -> the layout's (device, quantity) keys
_POSITION_MEMO = "web.history.position"  # FrameFields.memo: quantity -> its last position


def _keys(fields: FrameFields, device: str) -> tuple[tuple[str, str], ...]:
    by_device: dict[str, tuple[tuple[str, str], ...]] = fields.memo.setdefault(_KEYS_MEMO, {})
    keys = by_device.get(device)
    if keys is None:
        if len(by_device) >= 1000:  # devices named per frame: stay bounded
            by_device.clear()
        keys = by_device[device] = tuple((device, q) for q in fields.quantities)
    return keys


def _ts(entry: Latest) -> int:
    return entry.ts_ns


def _position(frame: Frame, quantity: str) -> int:
    positions: dict[str, int] | None = frame.fields.memo.get(_POSITION_MEMO)
    if positions is None:
        # the last position wins, as the last of a batch of readings does
        positions = frame.fields.memo[_POSITION_MEMO] = {q: i for i, q in enumerate(frame.fields.quantities)}
    return positions[quantity]


def as_reading(entry: Latest, quantity: str) -> Reading:
    """The Reading of ``quantity`` that a latest-value entry stands for."""
    if not isinstance(entry, Frame):
        return entry
    i = _position(entry, quantity)
    return make_reading(entry.ts_ns, entry.site, entry.gateway, entry.device, quantity, entry.values[i],
                        entry.fields.units[i], entry.tags, entry.quality(i))  # fmt: skip


class Ring:
    """A fixed-size ring of (step start, value), one slot per step; a newer step overwrites an older one."""

    __slots__ = ("buckets", "size", "step_ns", "values")

    def __init__(self, step_s: float, size: int) -> None:
        self.step_ns = round(step_s * 1e9)
        self.size = size
        self.buckets = array("q", [-1]) * size
        self.values = array("d", [math.nan]) * size

    def put(self, ts_ns: int, value: float) -> None:
        bucket = ts_ns // self.step_ns
        slot = bucket % self.size
        if bucket >= self.buckets[slot]:  # a late reading never overwrites a newer step
            self.buckets[slot] = bucket
            self.values[slot] = value

    def points(self, from_ns: int, to_ns: int) -> list[tuple[int, float]]:
        lo, hi = from_ns // self.step_ns, to_ns // self.step_ns
        found = sorted((b, v) for b, v in zip(self.buckets, self.values, strict=True) if lo <= b <= hi)
        return [(b * self.step_ns, v) for b, v in found]

    @property
    def span_ns(self) -> int:
        return self.step_ns * self.size

    def nbytes(self) -> int:
        return self.buckets.itemsize * self.size + self.values.itemsize * self.size


class LatestPoint(NamedTuple):
    device: str
    quantity: str
    unit: str
    value: Value
    ts_ns: int
    quality: Quality


@dataclass(slots=True)
class Series:
    source: str
    device: str
    quantity: str
    unit: str = ""
    hour: Ring | None = None
    day: Ring | None = None
    capped: bool = False  # no rings: the history was full when it appeared


class SeriesHistory:
    def __init__(
        self,
        *,
        step_s: float = 10.0,
        day_step_s: float = DAY_STEP_S,
        day_points: int = DAY_POINTS,
        max_bytes: int = MAX_RING_BYTES,
    ) -> None:
        self.step_s = step_s
        self.max_bytes = max_bytes
        self.ring_bytes = 0
        self.series_without_rings = 0  # over max_bytes: last value only (logged once, shown in the status)
        self.hour_points = math.ceil(3600 / step_s) + 1  # + 1: a full hour whatever the phase of the step
        self.day_step_s = day_step_s
        self.day_points = day_points
        # source -> (device, quantity) -> newest reading (or the frame holding it); written on the hot path.
        self._latest: dict[str, dict[tuple[str, str], Latest]] = {}
        self._series: dict[SeriesKey, Series] = {}
        # source -> (device, layout id or quantity) -> the newest frame or reading not yet sampled; hot path too.
        self._pending: dict[str, dict[tuple[str, object], Latest]] = {}
        self._devices: dict[str, set[str]] = {}
        self._slots: dict[tuple[str, str, int], tuple[FrameFields, list[Series]]] = {}
        self._hour_step_ns = round(step_s * 1e9)
        self._day_step_ns = round(day_step_s * 1e9)
        self.observed_total = 0  # readings seen, for the ingest rate

    def observer(self, source: str) -> Callable[[Sequence[Item]], None]:
        """The hook for one source's normaliser: keeps the newest reading of each series."""
        latest = self._latest.setdefault(source, {})
        pending = self._pending.setdefault(source, {})

        def observe(items: Sequence[Item]) -> None:
            values = 0
            for r in items:
                if isinstance(r, Frame):
                    latest.update(zip(_keys(r.fields, r.device), repeat(r)))
                    values += len(r.values)
                    key: tuple[str, object] = (r.device, id(r.fields))  # the frame holds its fields: id is unique
                else:
                    key = (r.device, r.quantity)
                    latest[key] = r
                    values += 1
                pending[key] = r  # the newest of its device and layout (sample() orders layouts by time)
            self.observed_total += values

        return observe

    def forget_source(self, source: str) -> None:
        """A source removed by a reload: its series leave the page and give their memory back."""
        self._latest.pop(source, None)
        self._pending.pop(source, None)
        self._devices.pop(source, None)
        for layout in [k for k in self._slots if k[0] == source]:
            del self._slots[layout]
        for key in [k for k in self._series if k[0] == source]:
            series = self._series.pop(key)
            if series.hour is not None:
                self.ring_bytes -= 16 * (self.hour_points + self.day_points)

    def devices(self, source: str) -> set[str]:
        """The devices of one source that have sent a value (up to the last ``sample()``)."""
        return self._devices.get(source, set())

    def sample(self, now_ns: int | None = None) -> None:
        """Copy the newest value of each series into its rings (called about once a second).

        Works per frame, not per series: only the frames that arrived since the
        last call are looked at (the newest of each device and layout), and a
        frame's values go into the rings of its layout's series in one pass.
        """
        for source, pending in self._pending.items():
            if not pending:
                continue
            # by time: of two layouts that share a quantity, the newer frame's value is the one kept
            entries = sorted(pending.values(), key=_ts)
            pending.clear()
            devices = self._devices.setdefault(source, set())
            for entry in entries:
                devices.add(entry.device)
                if isinstance(entry, Frame):
                    self._sample_frame(source, entry)
                else:
                    series = self._series.get((source, entry.device, entry.quantity))
                    if series is None:
                        series = self._series[(source, entry.device, entry.quantity)] = Series(
                            source, entry.device, entry.quantity, entry.unit
                        )
                    series.unit = entry.unit
                    value = entry.value
                    if isinstance(value, bool | int | float) and math.isfinite(float(value)):
                        self._put(series, entry.ts_ns, float(value))

    def _layout_series(self, source: str, frame: Frame) -> list[Series]:
        """The series of each position of a frame's layout, made once per source, device and layout."""
        fields = frame.fields
        key = (source, frame.device, id(fields))
        hit = self._slots.get(key)
        if hit is not None and hit[0] is fields:  # an id may be reused once its fields are gone
            return hit[1]
        if len(self._slots) >= MAX_LAYOUTS:  # layouts named per frame: stay bounded
            self._slots.clear()
        out = []
        for quantity, unit in zip(fields.quantities, fields.units, strict=True):
            series = self._series.get((source, frame.device, quantity))
            if series is None:
                series = self._series[(source, frame.device, quantity)] = Series(source, frame.device, quantity)
            series.unit = unit
            out.append(series)
        self._slots[key] = (fields, out)
        return out

    def _sample_frame(self, source: str, frame: Frame) -> None:
        slots = self._layout_series(source, frame)
        try:  # all numbers and finite (the usual frame): one conversion and one check for the frame
            values: Sequence[float] = array("d", frame.values)  # type: ignore[arg-type]  # TypeError: not numbers
            numeric = math.isfinite(sum(values))  # a sum that overflows only sends us the slow way
        except (TypeError, OverflowError):
            numeric = False
        if not numeric:
            for series, value in zip(slots, frame.values, strict=True):
                if isinstance(value, bool | int | float) and math.isfinite(float(value)):
                    self._put(series, frame.ts_ns, float(value))
            return
        # Every ring has the same step and size: the slot and step number are the frame's, computed once.
        ts_ns = frame.ts_ns
        hour_bucket, day_bucket = ts_ns // self._hour_step_ns, ts_ns // self._day_step_ns
        hour_slot, day_slot = hour_bucket % self.hour_points, day_bucket % self.day_points
        for series, value in zip(slots, values, strict=True):
            hour, day = series.hour, series.day
            if hour is None or day is None:
                if not series.capped:  # a series over the memory bound has no rings, ever
                    self._put(series, ts_ns, value)
                continue
            if hour_bucket >= hour.buckets[hour_slot]:  # as Ring.put: a late reading never overwrites a newer step
                hour.buckets[hour_slot] = hour_bucket
                hour.values[hour_slot] = value
            if day_bucket >= day.buckets[day_slot]:
                day.buckets[day_slot] = day_bucket
                day.values[day_slot] = value

    def record(self, key: SeriesKey, unit: str, value: float, ts_ns: int | None = None) -> None:
        """A gateway's own series (e.g. the buffer depth), sampled by the caller."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series(*key, unit=unit)
        self._put(series, time.time_ns() if ts_ns is None else ts_ns, value)

    def _put(self, series: Series, ts_ns: int, value: float) -> None:
        if series.hour is None or series.day is None:
            if not self._allocate(series):
                return
            assert series.hour is not None and series.day is not None
        series.hour.put(ts_ns, value)
        series.day.put(ts_ns, value)

    def _allocate(self, series: Series) -> bool:
        if series.capped:
            return False
        cost = 16 * (self.hour_points + self.day_points)
        if self.ring_bytes + cost > self.max_bytes:
            if self.series_without_rings == 0:
                log.warning(
                    "status page: the in-memory history is full (%d MB); %s/%s/%s and any further series show "
                    "their last value without a plot (the local store, if configured, still has them all)",
                    self.max_bytes // 1024**2, series.source, series.device, series.quantity,
                )  # fmt: skip
            self.series_without_rings += 1
            series.capped = True
            return False
        series.hour = Ring(self.step_s, self.hour_points)
        series.day = Ring(self.day_step_s, self.day_points)
        self.ring_bytes += cost
        return True

    def latest(self, source: str | None = None) -> Iterator[tuple[str, Reading]]:
        """The newest reading of every series (of one source)."""
        for name, latest in self._latest.items() if source is None else ((source, self._latest.get(source, {})),):
            for (_, quantity), entry in latest.items():
                yield name, as_reading(entry, quantity)

    def latest_points(self, source: str) -> Iterator[LatestPoint]:
        """The newest value of every series of one source, without building a Reading (the page's tick)."""
        for (device, quantity), entry in self._latest.get(source, {}).items():
            if isinstance(entry, Frame):
                i = _position(entry, quantity)
                yield LatestPoint(device, quantity, entry.fields.units[i], entry.values[i], entry.ts_ns,
                                  entry.quality(i))  # fmt: skip
            else:
                yield LatestPoint(device, quantity, entry.unit, entry.value, entry.ts_ns, entry.quality)

    def series(self) -> list[Series]:
        return list(self._series.values())

    def get(self, key: SeriesKey) -> Series | None:
        return self._series.get(key)

    def points(self, key: SeriesKey, from_ns: int, to_ns: int) -> list[tuple[int, float]]:
        """The finest ring that covers ``from_ns``; empty for an unknown or text series."""
        series = self._series.get(key)
        if series is None or series.hour is None or series.day is None:
            return []
        ring = series.hour if to_ns - from_ns <= series.hour.span_ns - series.hour.step_ns else series.day
        return ring.points(from_ns, to_ns)

    def nbytes(self) -> int:
        """Bytes held by the rings (the documented bound)."""
        return sum(s.hour.nbytes() + s.day.nbytes() for s in self._series.values() if s.hour and s.day)
