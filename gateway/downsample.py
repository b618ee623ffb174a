"""Per-sink downsampling: one sink gets statistics per aligned window, the others the raw readings.

``[sinks.downsample] window = "15m", stats = ["mean"]`` on a sink: its dispatcher
(gateway.dispatch) feeds the readings its rules select into a ``WindowAggregator``
(gateway/aggregate.py: the same windows, statistics and late-reading rule as a
source's ``aggregate``) and sends each window's aggregates once it closes.

Durability (docs/routing.md, "Downsampling"): the buffer keeps one copy of the raw
readings, and this sink's cursor stays before the first raw reading of any window
still in memory (open, or still correctable by a late reading), so a kill -9 at any
moment loses no window: the dispatcher reads the raw readings again and rebuilds the
windows. A window already forgotten (sent and past correction) must not be rebuilt
from the part of its readings that lies after the cursor: before the cursor moves,
``DownsampleState`` records (fsynced) that the readings stamped before ``D`` with a
buffer id up to ``X`` are in windows already done; those are skipped when read again. Points are
idempotent per series and window start, so a window sent again after a crash
replaces itself with the same value.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.aggregate import AggregateConfig, Stat, WindowAggregator
from gateway.buffer_types import BufferedReading
from gateway.config_types import Duration


class DownsampleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration = Field(ge=1.0, le=86400.0, description="window length, aligned on the epoch (e.g. 15m)")
    stats: list[Stat] = Field(default=["mean"], min_length=1, description="mean, min, max, last, count")
    grace: Duration = Field(default=2.0, ge=0.0, le=3600.0, description="wait after a window's end for late readings")

    @model_validator(mode="after")
    def _distinct_stats(self) -> DownsampleConfig:
        if len(set(self.stats)) != len(self.stats):
            raise ValueError(f"stats: each statistic once ({self.stats})")
        return self

    def aggregate(self) -> AggregateConfig:
        return AggregateConfig(window=self.window, stats=self.stats, grace=self.grace)


@dataclass(frozen=True, slots=True)
class Done:
    """Readings stamped before ``before_ns`` with buffer id <= ``through_id`` are in windows already done."""

    before_ns: int = 0
    through_id: int = 0


class DownsampleState:
    """The sink's ``Done`` mark in ``<state_dir>/downsample-<sink>.json``, replaced atomically and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Done:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Done(int(data["before_ns"]), int(data["through_id"]))
        except FileNotFoundError:
            return Done()

    def save(self, done: Done) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump({"before_ns": done.before_ns, "through_id": done.through_id}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself must survive a power cut
        finally:
            os.close(fd)


class Downsampler:
    """The windows of one sink, rebuilt from its cursor after every (re)start."""

    def __init__(
        self, config: DownsampleConfig, state: DownsampleState, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.config = config
        self.state = state
        self.clock = clock  # windows close by the gateway's clock (tests move it by hand)
        self.done = Done()
        self.windows = WindowAggregator(config.aggregate())
        self.skipped = 0  # readings of windows already done, read again after a restart

    def restart(self) -> None:
        """Forget the windows in memory and read the done mark: the dispatcher reads again from its cursor."""
        self.done = self.state.load()
        self.windows = WindowAggregator(self.config.aggregate())

    def add(self, items: Sequence[BufferedReading], now_ns: int) -> None:
        done = self.done
        if done.through_id and items and items[0].id <= done.through_id:
            # By timestamp, not window start: the windows done all ended by ``before_ns``, and a window
            # length changed by a reload must not make readings of a window still held count as done.
            kept = [i for i in items if i.id > done.through_id or i.reading.ts_ns >= done.before_ns]
            self.skipped += len(items) - len(kept)
            items = kept
        self.windows.add((i.reading for i in items), now_ns, (i.id for i in items))

    def due(self, now_ns: int) -> list[BufferedReading]:
        """Aggregates of the windows that closed (or were corrected), each with its window's first buffer id."""
        return [BufferedReading(first_id, r) for first_id, r in self.windows.due_items(now_ns)]

    def settle(self, read_through_id: int) -> Done | None:
        """After the due aggregates were delivered: the new done mark to save before acking, if it moved."""
        before = self.windows.forgotten_before_ns
        if before <= self.done.before_ns:
            return None
        self.done = Done(before, read_through_id)
        return self.done

    def ack_target(self, read_through_id: int) -> int:
        """How far the sink's cursor may move: up to the first raw reading of a window still in memory."""
        held = self.windows.held_id()
        return read_through_id if held is None else min(held - 1, read_through_id)
