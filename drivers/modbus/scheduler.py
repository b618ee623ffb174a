"""One scheduler per physical bus: devices take turns, each on its own aligned ticks.

The bus runs one transaction at a time (``Bus`` holds a lock and the
inter-frame pause), so the scheduler is a single loop that always serves the
device whose next tick is the earliest. A device that stops answering leaves
the tick grid and is retried after a capped, jittered, exponentially growing
delay, so it costs one timeout per retry instead of one per tick; when it
answers again it rejoins the grid. docs/modbus.md walks through an example.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.aio import raise_if_cancel_requested
from gateway.driver import DriverContext, Emit
from gateway.drivers.modbus.bus import Bus, BusUnavailable
from gateway.drivers.modbus.poller import DevicePoller
from gateway.scheduling import FIRST_POLL_AT_ONCE, Backoff, next_aligned_tick


@dataclass(slots=True)
class DeviceSlot:
    poller: DevicePoller
    due_s: float  # wall clock time of the next poll
    tick_s: float  # aligned tick the next poll belongs to (reading timestamp)
    backoff: Backoff
    first: bool = True  # the first poll: at once, stamped with its real time (scheduling.FIRST_POLL_AT_ONCE)
    down: bool = False
    polls: int = 0
    missed_ticks: int = 0

    @property
    def name(self) -> str:
        return self.poller.device.name


@dataclass(slots=True)
class BusStats:
    polls: int = 0
    requests: int = 0
    readings: int = 0
    missed_ticks: int = 0
    per_device: dict[str, int] = field(default_factory=dict)


class BusScheduler:
    def __init__(
        self,
        *,
        bus: Bus,
        pollers: Sequence[DevicePoller],
        ctx: DriverContext,
        backoff_max_s: float = 300.0,
        reconnect_initial_s: float = 0.5,
    ) -> None:
        self.bus = bus
        self.ctx = ctx
        self.stats = BusStats()
        now = time.time()
        self.slots = []
        for p in pollers:
            interval = p.device.interval_s
            tick = now if FIRST_POLL_AT_ONCE else next_aligned_tick(now, interval)
            backoff = Backoff(initial_s=interval, cap_s=max(backoff_max_s, interval))
            self.slots.append(DeviceSlot(p, tick, tick, backoff, first=FIRST_POLL_AT_ONCE))
        self._reconnect = Backoff(initial_s=reconnect_initial_s, cap_s=min(30.0, backoff_max_s))
        self._bus_down = False

    async def run(self, emit: Emit) -> None:
        """Poll forever. Readings are handed over without waiting for their commit: a bus has nothing to
        acknowledge, and waiting for each poll's commit once capped a bus at about 5 polls/s."""
        while True:
            raise_if_cancel_requested()  # pymodbus' wait_for can swallow our cancellation (gateway/aio.py)
            slot = min(self.slots, key=lambda s: s.due_s)
            delay = slot.due_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not await self._ensure_connected():
                continue
            if slot.first:
                # Not on the grid: stamped with when it is read (devices of a bus take turns at start-up).
                slot.first = False
                slot.tick_s = time.time()
            elif not slot.down and time.time() - slot.tick_s > slot.poller.device.interval_s:
                self._schedule_on_grid(slot)  # the bus was away or overran: rejoin at the next tick
                continue
            started = time.monotonic()
            # float ticks (k * 0.2) are inexact: round the stamp to the millisecond
            ts_ns = round(slot.tick_s * 1000) * 1_000_000 if not slot.down else time.time_ns()
            try:
                result = await slot.poller.poll(ts_ns, probe_only=slot.down)
            except BusUnavailable as exc:
                self._mark_bus_down(str(exc))
                continue
            self.ctx.observe_poll(time.monotonic() - started)
            slot.polls += 1
            self.stats.polls += 1
            self.stats.requests += result.requests
            if result.answered:
                if slot.down:
                    slot.down = False
                    slot.backoff.reset()
                self.ctx.device_up(slot.name)
                self._schedule_on_grid(slot)
            else:
                slot.down = True
                self.ctx.device_down(slot.name, result.failure or "no answer")
                slot.due_s = time.time() + slot.backoff.next_delay()
            if result.frames:
                self.stats.readings += result.values
                await emit(result.frames, wait_commit=False)

    def _schedule_on_grid(self, slot: DeviceSlot) -> None:
        interval = slot.poller.device.interval_s
        now = time.time()
        nxt = next_aligned_tick(now, interval)
        if nxt <= slot.tick_s + 1e-9:
            nxt = slot.tick_s + interval
        # Skip, never burst: a late bus drops ticks rather than catching up.
        missed = max(0, round((nxt - slot.tick_s) / interval) - 1)
        if missed:
            slot.missed_ticks += missed
            self.stats.missed_ticks += missed
            self.ctx.count_error("missed_tick", slot.name)
        slot.tick_s = slot.due_s = nxt

    async def _ensure_connected(self) -> bool:
        if self.bus.connected:
            return True
        try:
            await self.bus.connect()
        except BusUnavailable as exc:
            self._mark_bus_down(str(exc))
            await asyncio.sleep(self._reconnect.next_delay())
            return False
        if self._bus_down:
            self._bus_down = False
            self.ctx.logger.warning("modbus bus %s is back", self.bus.config.endpoint)
        self._reconnect.reset()
        return True

    def _mark_bus_down(self, reason: str) -> None:
        self.ctx.count_error("connection_lost")
        if not self._bus_down:
            self._bus_down = True
            self.ctx.logger.error("modbus bus %s is unavailable: %s", self.bus.config.endpoint, reason)
        self.bus.close()
