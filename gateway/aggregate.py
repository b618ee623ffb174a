"""Per-source aggregation: readings combined over aligned time windows before the buffer.

A 1 Hz particulate sensor makes 86,400 readings a day per quantity; a pilot on
a metered 4G link usually wants one-minute means. A source with
``aggregate = { window = "60s", stats = ["mean", "max"] }`` sends, per series
and window, one reading per statistic instead of every reading.

Rules (docs/data-model.md, "Aggregated sources"):

* Windows are aligned on the Unix epoch, ``[k*w, (k+1)*w)``; an aggregate is
  stamped with its window's start.
* ``mean`` keeps the series as it is (same quantity, unit and tags), so a
  dashboard needs no change; ``min``, ``max`` and ``last`` add the tag
  ``stat=<name>``; ``count`` (readings in the window) adds ``stat=count`` with
  the unit ``count``. Values that are not numbers (str, bool) are never averaged:
  their series gets the window's last value, untagged.
* BAD readings are left out of a window that has others; the aggregate's
  quality is the worst of the readings used.
* A window is emitted ``grace`` after its end. It stays in memory for one more
  window length: a late reading for it updates it and the corrected aggregate
  is emitted again (the stores keep one point per series and timestamp, so it
  replaces the first). A reading later than that opens its window again and
  is sent with the next aggregates, never dropped: readings replayed together
  after an outage aggregate normally, but a lone straggler's aggregate
  replaces the window's first one in the stores (counted as ``reopened``).
* At a clean stop or a reload the open windows are emitted early (partial).

Durability: the readings of an open window live in memory until it is emitted.
A kill -9 or a power cut loses at most the windows not yet emitted; the
durable buffer holds everything from there on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config_types import Duration
from gateway.model import Quality, Reading, Value, make_reading
from gateway.tags import TagsCache, encode_tags

Stat = Literal["mean", "min", "max", "last", "count"]


class AggregateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: Duration = Field(ge=1.0, le=86400.0, description="window length, aligned on the epoch (e.g. 60s)")
    stats: list[Stat] = Field(default=["mean"], min_length=1, description="statistics sent per window")
    grace: Duration = Field(default=2.0, ge=0.0, le=3600.0, description="wait after a window's end for late readings")

    @model_validator(mode="after")
    def _distinct_stats(self) -> AggregateConfig:
        if len(set(self.stats)) != len(self.stats):
            raise ValueError(f"stats: each statistic once ({self.stats})")
        return self


_Series = tuple[str, str, str, str, str, str]  # site, gateway, device, quantity, unit, tags text


@dataclass(slots=True)
class _Window:
    first: Reading  # identity of the series (site, gateway, device, quantity, unit, tags)
    start_ns: int
    count: int = 0
    total: float = 0.0
    low: Value | None = None
    high: Value | None = None
    last: Reading | None = None
    last_ts: int = -1
    quality: Quality = Quality.GOOD
    numeric: bool = True
    only_bad: bool = True  # all readings so far are BAD (they count only while nothing better exists)
    emitted: bool = False
    dirty: bool = False
    first_id: int = 0  # smallest buffer id of its readings (per-sink downsampling, gateway/downsample.py); 0: none


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class WindowAggregator:
    """Collects readings into windows; :meth:`due` returns the aggregates ready to send."""

    def __init__(self, config: AggregateConfig) -> None:
        self.config = config
        self.window_ns = int(config.window * 1e9)
        self.grace_ns = int(config.grace * 1e9)
        self._windows: dict[tuple[_Series, int], _Window] = {}
        self._tags_key = TagsCache(encode_tags, "")  # tags as canonical text, once per tag set
        self.reopened = 0  # windows opened again by a reading that came after they were forgotten
        self.forgotten_before_ns = 0  # every window that starts before this has been forgotten (end of the newest)

    def add(self, readings: Iterable[Reading], now_ns: int, ids: Iterable[int] | None = None) -> None:
        """Add readings; ``ids`` (their buffer ids, in the same order) lets ``held_id`` say which must stay."""
        forget_before = now_ns - self.grace_ns - self.window_ns
        id_of = iter(ids) if ids is not None else None
        for r in readings:
            start = r.ts_ns - r.ts_ns % self.window_ns
            key = ((r.site, r.gateway, r.device, r.quantity, r.unit, self._tags_key(r.tags)), start)
            window = self._windows.get(key)
            if window is None:
                if start + self.window_ns <= forget_before:
                    self.reopened += 1
                window = self._windows[key] = _Window(first=r, start_ns=start)
            if id_of is not None:
                row_id = next(id_of)
                if not window.first_id or row_id < window.first_id:
                    window.first_id = row_id
            self._include(window, r)

    def _include(self, w: _Window, r: Reading) -> None:
        if w.emitted:
            w.dirty = True
        if r.quality is Quality.BAD and not w.only_bad:
            return  # a window with better readings leaves BAD ones out
        if r.quality is not Quality.BAD and w.only_bad:
            if w.count:  # drop what the BAD readings contributed
                w.count, w.total, w.low, w.high, w.last, w.last_ts = 0, 0.0, None, None, None, -1
                w.quality, w.numeric = Quality.GOOD, True
            w.only_bad = False
        value = r.value
        if _is_number(value):
            w.total += value  # type: ignore[operator]
            if w.low is None or value < w.low:  # type: ignore[operator]
                w.low = value
            if w.high is None or value > w.high:  # type: ignore[operator]
                w.high = value
        else:
            w.numeric = False
        w.count += 1
        if r.ts_ns >= w.last_ts:
            w.last, w.last_ts = r, r.ts_ns
        w.quality = max(w.quality, r.quality)

    def due(self, now_ns: int) -> list[Reading]:
        """Aggregates of windows whose end + grace has passed (and corrected ones); forgets old windows."""
        return [r for _, r in self.due_items(now_ns)]

    def due_items(self, now_ns: int) -> list[tuple[int, Reading]]:
        """``due`` with each aggregate's window ``first_id``."""
        out: list[tuple[int, Reading]] = []
        forget_before = now_ns - self.grace_ns - self.window_ns
        for key, w in list(self._windows.items()):
            end = w.start_ns + self.window_ns
            if end + self.grace_ns <= now_ns and (not w.emitted or w.dirty):  # reopened windows too
                out.extend((w.first_id, r) for r in self._aggregates(w))
                w.emitted, w.dirty = True, False
            if end <= forget_before:
                del self._windows[key]
                self.forgotten_before_ns = max(self.forgotten_before_ns, end)
        return out

    def held_id(self) -> int | None:
        """The smallest buffer id of a reading of a window still in memory (open or still correctable)."""
        return min((w.first_id for w in self._windows.values() if w.first_id), default=None)

    def close_all(self) -> list[Reading]:
        """Every window not yet sent (or corrected), partial or not: for a clean stop or a reload."""
        out: list[Reading] = []
        for w in self._windows.values():
            if not w.emitted or w.dirty:
                out.extend(self._aggregates(w))
        self._windows.clear()
        return out

    @property
    def open_windows(self) -> int:
        return sum(1 for w in self._windows.values() if not w.emitted)

    def _aggregates(self, w: _Window) -> Sequence[Reading]:
        f = w.first
        if not w.numeric:
            assert w.last is not None
            return [make_reading(w.start_ns, f.site, f.gateway, f.device, f.quantity, w.last.value, f.unit, f.tags,
                                 w.quality)]  # fmt: skip
        out = []
        for stat in self.config.stats:
            unit = f.unit
            if stat == "mean":
                value: Value = w.total / w.count
                tags = f.tags
            elif stat == "count":
                value, unit, tags = w.count, "count", {**f.tags, "stat": stat}
            else:
                assert w.last is not None
                value = {"min": w.low, "max": w.high, "last": w.last.value}[stat]  # type: ignore[assignment]
                tags = {**f.tags, "stat": stat}
            out.append(make_reading(w.start_ns, f.site, f.gateway, f.device, f.quantity, value, unit, tags,
                                    w.quality))  # fmt: skip
        return out
