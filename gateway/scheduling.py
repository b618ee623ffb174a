"""Aligned, drift-free ticks and capped jittered backoff, shared by core and drivers."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

_phase = 0.0  # fraction of each interval this process polls at; set once by the daemon

# A source's first poll runs as soon as it starts, stamped with its real time, and the following ones on
# the grid: a gateway that (re)starts shows data at once, not after up to one interval (15 min for a
# slow meter), and the timestamp still says when the value was read (docs/data-model.md, "Poll phase").
FIRST_POLL_AT_ONCE = True


def set_phase(fraction: float) -> float:
    """Set the gateway's poll phase (``[gateway] poll_phase``, docs/fleet.md); returns the previous one.

    One value per process on purpose: every source and every driver's own schedule (a Modbus bus, a
    serial stream) uses it through ``next_aligned_tick`` without knowing about it, so all readings of
    one gateway still share timestamps while different gateways poll at different instants.
    """
    global _phase
    if not 0 <= fraction < 1:
        raise ValueError(f"a phase is a fraction in [0, 1), not {fraction}")
    previous, _phase = _phase, fraction
    return previous


def phase() -> float:
    return _phase


def next_aligned_tick(now_s: float, interval_s: float, offset_s: float | None = None) -> float:
    """The first wall-clock instant >= now that is offset + k * interval (k integer).

    Aligning to the wall clock makes readings of all devices with the same
    interval share timestamps (10:00:00, 10:00:10...), which is what dashboards
    and joins expect, and computing each tick from the clock (never by adding
    the interval to the previous sleep) means no drift. The default offset is
    the gateway's phase times the interval (``set_phase``): a fleet's gateways
    then spread over the interval instead of all sending in the same instant.
    """
    if offset_s is None:
        offset_s = _phase * interval_s
    k = math.ceil((now_s - offset_s) / interval_s - 1e-9)
    return offset_s + k * interval_s


async def aligned_ticks(
    interval_s: float, *, offset_s: float | None = None, first_at_once: bool = False
) -> AsyncIterator[tuple[float, int]]:
    """Yield (tick_time_s, missed) at every aligned tick, forever.

    ``missed`` counts ticks skipped because the previous iteration overran; we
    skip rather than burst, so a slow device never snowballs. ``first_at_once``
    yields the current time first, then the grid (see ``FIRST_POLL_AT_ONCE``).
    """
    tick = time.time() if first_at_once else next_aligned_tick(time.time(), interval_s, offset_s)
    missed = 0
    while True:
        delay = tick - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield tick, missed
        following = next_aligned_tick(time.time(), interval_s, offset_s)
        if following <= tick + 1e-9:
            following = tick + interval_s
        missed = max(0, round((following - tick) / interval_s) - 1)
        tick = following


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog style).

    ``next_delay()`` grows the delay; ``reset()`` after a success.
    """

    initial_s: float = 1.0
    cap_s: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5  # fraction of the delay that is randomised
    attempts: int = field(default=0)

    def next_delay(self) -> float:
        base = min(self.cap_s, self.initial_s * self.factor**self.attempts)
        self.attempts += 1
        return base * (1 - self.jitter) + random.uniform(0, base * self.jitter)

    def reset(self) -> None:
        self.attempts = 0
