"""Aligned ticks (no drift, skipped ticks counted) and capped jittered backoff."""

from __future__ import annotations

import itertools
import time

from gateway.scheduling import Backoff, aligned_ticks, next_aligned_tick


def test_next_aligned_tick_is_on_the_grid_and_not_in_the_past() -> None:
    assert next_aligned_tick(100.0, 10.0) == 100.0
    assert next_aligned_tick(100.01, 10.0) == 110.0
    assert next_aligned_tick(105.0, 10.0, offset_s=3.0) == 113.0
    assert next_aligned_tick(0.3, 0.25) == 0.5


async def test_ticks_land_on_the_grid_without_drift() -> None:
    interval = 0.05
    ticks = []
    async for tick, missed in aligned_ticks(interval):
        ticks.append((tick, time.time(), missed))
        if len(ticks) == 12:
            break
    grid = [round(t / interval) * interval for t, _, _ in ticks]
    assert all(abs(t - g) < 1e-6 for (t, _, _), g in zip(ticks, grid, strict=True))
    steps = {round((b[0] - a[0]) / interval) for a, b in itertools.pairwise(ticks)}
    assert steps == {1}
    assert all(fired >= tick - 1e-3 for tick, fired, _ in ticks)
    # No drift: the 12th tick is exactly 11 intervals after the first.
    assert abs(ticks[-1][0] - ticks[0][0] - 11 * interval) < 1e-6


async def test_first_tick_at_once_then_the_grid() -> None:
    interval = 0.5
    ticks = []
    started = time.time()
    async for tick, missed in aligned_ticks(interval, first_at_once=True):
        ticks.append((tick, time.time(), missed))
        if len(ticks) == 3:
            break
    (first, first_fired, _), *rest = ticks
    assert started <= first <= first_fired < started + 0.05  # no wait for the grid (0-0.5 s here)
    assert all(abs(t / interval - round(t / interval)) < 1e-6 and missed == 0 for t, _, missed in rest)
    assert rest[0][0] - first <= interval  # the very next tick of the grid


async def test_an_overrun_skips_ticks_and_reports_them() -> None:
    interval = 0.05
    seen = []
    async for tick, missed in aligned_ticks(interval):
        seen.append((tick, missed))
        if len(seen) == 1:
            time.sleep(interval * 3.5)  # a poll that overruns three and a half intervals
        if len(seen) == 2:
            break
    (first, _), (second, missed) = seen
    assert missed == round((second - first) / interval) - 1
    assert missed >= 3


def test_backoff_grows_is_capped_and_resets() -> None:
    b = Backoff(initial_s=1.0, cap_s=8.0, jitter=0.5)
    delays = [b.next_delay() for _ in range(8)]
    assert 0.5 <= delays[0] <= 1.0
    assert all(d <= 8.0 for d in delays)
    assert delays[-1] >= 4.0  # capped at 8, with at most half of it as jitter
    b.reset()
    assert b.next_delay() <= 1.0
