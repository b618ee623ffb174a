"""Recent values for the status page: the newest frame of every device and layout, and two rings per series.

Fed by the normaliser of each source (``SeriesHistory.observer``). On the hot
path an item costs one dict store whatever its size: a frame is kept whole as
the newest of its device and layout (a reading as the newest of its series),
so the pipeline's tens of thousands of values a second do not notice the page
(bench/bench_web.py measures it). "The newest value of each series" is worked
out from those frames only when the page is rendered (``latest_points``), at
most once a second and only when someone looks.

Once a second ``sample()`` looks only at the frames that arrived since the last
call (the newest of each device and layout) and copies each frame's values into
its series' rings in one pass:

- the hour ring: one point per ``step_s`` (default 10 s, 361 points for an hour);
- the day ring: one point per 2 minutes, 720 points for 24 hours.

A point is the last value of its step. A ring is one preallocated array of
float32, one slot per step (the slot is the step number modulo the size), plus
the number of its newest step: 4 bytes a point, so a numeric series costs
about 4.3 KB with the defaults and 100 series under 0.5 MB, whatever the
reading rate. float32 keeps 7 significant digits, plenty for a sparkline; the
page's latest value comes from the frame, exact. Text values keep only their
last reading, no ring.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gateway.frame import Frame, FrameFields, Item
from gateway.model import Quality, Reading, Value, make_reading

log = logging.getLogger("gateway.web")

HOUR_NS = 3600 * 10**9
POINT_BYTES = 4  # float32
MAX_RING_BYTES = 3 * 1024**2  # ~727 series with the defaults; a site with more sees the rest without plots
DAY_STEP_S = 120.0
DAY_POINTS = 720
MAX_LAYOUTS = 100_000  # (source, device, layout) entries of the sampler's cache; 100 x 500 in frames of 40 is 1,300
COMPACT_AT = 1024  # newest-frame entries of a source before the ones no series needs any more are dropped

SeriesKey = tuple[str, str, str]  # source, device, quantity
Latest = Reading | Frame  # a frame stands for its values of its series
EntryKey = tuple[str, object]  # (device, id of the frame's fields) or, for a reading, (device, quantity)

_EMPTY = -(2**62)  # the newest step of a ring that holds none
_blanks: dict[int, array[float]] = {}


def _blank(size: int) -> array[float]:
    """``size`` NaNs (a step without a value), shared by the rings of that size to clear slots from."""
    blank = _blanks.get(size)
    if blank is None:
        blank = _blanks[size] = array("f", [math.nan]) * size
    return blank


def _ts(entry: Latest) -> int:
    return entry.ts_ns


class Ring:
    """The last ``size`` steps of one series, one float32 a step.

    The slot of step ``s`` is ``s % size`` and ``newest`` is the newest step written, so the ring holds the
    steps ``newest - size + 1 .. newest``; a slot without a value there is NaN. A newer step moves ``newest``
    on and clears the steps it skipped; a late reading fills its own step if the ring still holds it, and is
    dropped otherwise: it never overwrites a newer step.
    """

    __slots__ = ("newest", "size", "step_ns", "values")

    def __init__(self, step_s: float, size: int) -> None:
        self.step_ns = round(step_s * 1e9)
        self.size = size
        self.newest = _EMPTY
        self.values = array("f", _blank(size))

    def put(self, ts_ns: int, value: float) -> None:
        self.put_step(ts_ns // self.step_ns, value)

    def put_step(self, step: int, value: float) -> None:
        if step > self.newest:
            self._advance(step)
        elif step <= self.newest - self.size:
            return  # older than every step the ring holds: its slot belongs to a newer step
        self.values[step % self.size] = value

    def _advance(self, step: int) -> None:
        size = self.size
        skipped = step - self.newest - 1
        if skipped >= size:
            self.values[:] = _blank(size)
        elif skipped > 0:  # the steps between the old newest and this one had no value
            first = (self.newest + 1) % size
            end = first + skipped
            blank = _blank(size)
            if end <= size:
                self.values[first:end] = blank[:skipped]
            else:
                self.values[first:] = blank[: size - first]
                self.values[: end - size] = blank[: end - size]
        self.newest = step

    def points(self, from_ns: int, to_ns: int) -> list[tuple[int, float]]:
        """(step start, value) of the steps from ``from_ns`` to ``to_ns`` that have a finite value, oldest first."""
        size, step_ns = self.size, self.step_ns
        lo = max(from_ns // step_ns, self.newest - size + 1)
        hi = min(to_ns // step_ns, self.newest)
        if lo > hi:
            return []
        first, last = lo % size, hi % size
        if first <= last:
            values = self.values[first : last + 1].tolist()
        else:
            values = self.values[first:].tolist() + self.values[: last + 1].tolist()
        # v - v == 0 is False for NaN (no value) and for a value too large for float32 (inf)
        return [(s * step_ns, v) for s, v in zip(range(lo, hi + 1), values, strict=True) if v - v == 0.0]

    @property
    def span_ns(self) -> int:
        return self.step_ns * self.size

    def nbytes(self) -> int:
        return self.values.itemsize * self.size


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


class _Layout:
    """A frame layout of one device: its series by position, and the rings of those that have them."""

    __slots__ = ("fields", "rings", "series")

    def __init__(self, fields: FrameFields, series: list[Series]) -> None:
        self.fields = fields  # held: the cache is keyed by its id
        self.series = series
        self.rings: list[tuple[int, Ring, Ring]] | None = None  # made at the layout's first numeric frame


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
        self.series_bytes = POINT_BYTES * (self.hour_points + day_points)  # the rings of one series
        self._series: dict[SeriesKey, Series] = {}
        # source -> (device, layout) -> the newest frame (or reading) not yet sampled: the hot path's one store.
        self._pending: dict[str, dict[EntryKey, Latest]] = {}
        # source -> (device, layout) -> the newest frame (or reading) as of the last sample(), in the order
        # sample() saw them: the page's latest values are resolved from these and the pending ones.
        self._newest: dict[str, dict[EntryKey, Latest]] = {}
        self._compact_at: dict[str, int] = {}
        self._devices: dict[str, set[str]] = {}
        self._layouts: dict[tuple[str, str, int], _Layout] = {}
        self._hour_step_ns = round(step_s * 1e9)
        self._day_step_ns = round(day_step_s * 1e9)
        self.observed_total = 0  # readings seen, for the ingest rate

    def observer(self, source: str) -> Callable[[Sequence[Item]], None]:
        """The hook for one source's normaliser: keeps the newest frame of each device and layout."""
        pending = self._pending.setdefault(source, {})

        def observe(items: Sequence[Item]) -> None:
            values = 0
            for r in items:
                if isinstance(r, Frame):
                    # the frame holds its fields, so their id is unique while the entry lives
                    pending[(r.device, id(r.fields))] = r
                    values += len(r.values)
                else:
                    pending[(r.device, r.quantity)] = r
                    values += 1
            self.observed_total += values

        return observe

    def forget_source(self, source: str) -> None:
        """A source removed by a reload: its series leave the page and give their memory back."""
        self._pending.pop(source, None)
        self._newest.pop(source, None)
        self._compact_at.pop(source, None)
        self._devices.pop(source, None)
        for layout in [k for k in self._layouts if k[0] == source]:
            del self._layouts[layout]
        for key in [k for k in self._series if k[0] == source]:
            series = self._series.pop(key)
            if series.hour is not None:
                self.ring_bytes -= self.series_bytes

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
            newest = self._newest.setdefault(source, {})
            for key, entry in pending.items():  # moved to the end: `newest` stays in the order of arrival
                newest.pop(key, None)
                newest[key] = entry
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
            if len(newest) >= self._compact_at.get(source, COMPACT_AT):
                self._compact(source, newest)

    def _compact(self, source: str, newest: dict[EntryKey, Latest]) -> None:
        """Drop the frames that are no series' newest value any more (a device whose layout changed)."""
        needed = {id(entry) for entry, _ in self._resolve(newest.values()).values()}
        for key in [k for k, entry in newest.items() if id(entry) not in needed]:
            del newest[key]
        self._compact_at[source] = max(COMPACT_AT, 2 * len(newest))  # amortised: readings never become stale

    def _layout(self, source: str, frame: Frame) -> _Layout:
        """The series of each position of a frame's layout, made once per source, device and layout."""
        fields = frame.fields
        key = (source, frame.device, id(fields))
        hit = self._layouts.get(key)
        if hit is not None and hit.fields is fields:  # an id may be reused once its fields are gone
            return hit
        if len(self._layouts) >= MAX_LAYOUTS:  # layouts named per frame: stay bounded
            self._layouts.clear()
        out = []
        for quantity, unit in zip(fields.quantities, fields.units, strict=True):
            series = self._series.get((source, frame.device, quantity))
            if series is None:
                series = self._series[(source, frame.device, quantity)] = Series(source, frame.device, quantity)
            series.unit = unit
            out.append(series)
        layout = self._layouts[key] = _Layout(fields, out)
        return layout

    def _sample_frame(self, source: str, frame: Frame) -> None:
        layout = self._layout(source, frame)
        if layout.rings is not None and not layout.rings:
            return  # every series of the layout is over the memory bound: nothing to plot
        try:  # all numbers and finite (the usual frame): one conversion and one check for the frame
            values: Sequence[float] = array("d", frame.values)  # type: ignore[arg-type]  # TypeError: not numbers
            numeric = math.isfinite(sum(values))  # a sum that overflows only sends us the slow way
        except (TypeError, OverflowError):
            numeric = False
        if not numeric:
            for series, value in zip(layout.series, frame.values, strict=True):
                if isinstance(value, bool | int | float) and math.isfinite(float(value)):
                    self._put(series, frame.ts_ns, float(value))
            return
        rings = layout.rings
        if rings is None:  # the first numeric frame of the layout: every series gets its rings, or is capped
            for series in layout.series:
                if series.hour is None:
                    self._allocate(series)
            rings = layout.rings = [(i, s.hour, s.day) for i, s in enumerate(layout.series) if s.hour and s.day]
        # Every ring has the same step and size: the step number and slot are the frame's, computed once.
        # Series over the memory bound have no rings, ever, and cost nothing here.
        ts_ns = frame.ts_ns
        hour_step, day_step = ts_ns // self._hour_step_ns, ts_ns // self._day_step_ns
        hour_slot, day_slot = hour_step % self.hour_points, day_step % self.day_points
        for i, hour, day in rings:
            value = values[i]
            if hour.newest == hour_step:  # the usual case: the step is already the ring's newest
                hour.values[hour_slot] = value
            else:  # a new step, or a late frame (Ring.put_step never lets it overwrite a newer step)
                hour.put_step(hour_step, value)
            if day.newest == day_step:
                day.values[day_slot] = value
            else:
                day.put_step(day_step, value)

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
        if self.ring_bytes + self.series_bytes > self.max_bytes:
            if self.series_without_rings == 0:
                log.warning(
                    "status page: the in-memory history is full (%.0f MB); %s/%s/%s and any further series show "
                    "their last value without a plot (the local store, if configured, still has them all)",
                    self.max_bytes / 1024**2, series.source, series.device, series.quantity,
                )  # fmt: skip
            self.series_without_rings += 1
            series.capped = True
            return False
        series.hour = Ring(self.step_s, self.hour_points)
        series.day = Ring(self.day_step_s, self.day_points)
        self.ring_bytes += self.series_bytes
        return True

    @staticmethod
    def _resolve(entries: Iterable[Latest]) -> dict[tuple[str, str], tuple[Latest, int]]:
        """(device, quantity) -> the entry holding its newest value and its position (-1: a reading).

        By time, and of equal times the later entry wins (the order of arrival), as the last of a batch
        of readings does; within a frame the last position of a quantity wins.
        """
        out: dict[tuple[str, str], tuple[Latest, int]] = {}
        for entry in sorted(entries, key=_ts):
            if isinstance(entry, Frame):
                device = entry.device
                for i, quantity in enumerate(entry.fields.quantities):
                    out[(device, quantity)] = (entry, i)
            else:
                out[(entry.device, entry.quantity)] = (entry, -1)
        return out

    def _latest_of(self, source: str) -> dict[tuple[str, str], tuple[Latest, int]]:
        newest = self._newest.get(source, {})
        pending = self._pending.get(source, {})
        # a layout in both: the pending frame came later and replaces the sampled one, as sample() will
        return self._resolve([e for k, e in newest.items() if k not in pending] + list(pending.values()))

    def latest(self, source: str | None = None) -> Iterator[tuple[str, Reading]]:
        """The newest reading of every series (of one source); for tests and tools, not the page's path."""
        for name in list(self._pending) if source is None else [source]:
            for (_, quantity), (entry, i) in self._latest_of(name).items():
                if isinstance(entry, Frame):
                    yield name, make_reading(entry.ts_ns, entry.site, entry.gateway, entry.device, quantity,
                                             entry.values[i], entry.fields.units[i], entry.tags,
                                             entry.quality(i))  # fmt: skip
                else:
                    yield name, entry

    def latest_points(self, source: str) -> Iterator[LatestPoint]:
        """The newest value of every series of one source, resolved from the newest frames (the page's render)."""
        for (device, quantity), (entry, i) in self._latest_of(source).items():
            if isinstance(entry, Frame):
                yield LatestPoint(device, quantity, entry.fields.units[i], entry.values[i], entry.ts_ns,
                                  entry.quality(i))  # fmt: skip
            else:
                yield LatestPoint(device, quantity, entry.unit, entry.value, entry.ts_ns, entry.quality)

    def entries(self, source: str) -> int:
        """How many newest frames (and readings) the history keeps for one source: one per device and layout."""
        return len(self._newest.get(source, {}).keys() | self._pending.get(source, {}).keys())

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
        """Bytes held by the rings' points (the documented bound)."""
        return sum(s.hour.nbytes() + s.day.nbytes() for s in self._series.values() if s.hour and s.day)
