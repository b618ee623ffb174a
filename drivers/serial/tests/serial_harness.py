"""Helpers for the end-to-end serial tests: run a driver against a pty simulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.driver import DriverContext
from gateway.drivers.serial.config import SerialSourceConfig
from gateway.drivers.serial.driver import SerialDriver
from gateway.drivers.serial.position import PositionRegistry
from gateway.frame import Frame, as_readings
from gateway.model import Reading


@dataclass
class Running:
    driver: SerialDriver
    readings: list[Reading] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def frames(self) -> list[dict[str, Any]]:
        """Readings grouped per frame (same timestamp), quantity -> value."""
        by_ts: dict[int, dict[str, Any]] = {}
        for r in self.readings:
            by_ts.setdefault(r.ts_ns, {})[r.quantity] = r.value
        return [by_ts[ts] for ts in sorted(by_ts)]


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_driver(
    *, positions: PositionRegistry | None = None, logger: logging.Logger | None = None, **config: Any
) -> AsyncIterator[Running]:
    cfg = SerialSourceConfig.model_validate({"driver": "serial", **config})
    SerialDriver.validate(cfg)
    errors: Counter[str] = Counter()
    ctx = DriverContext(
        site="s",
        gateway="g",
        source=cfg.name,
        driver="serial",
        logger=logger or logging.getLogger(f"test.serial.{cfg.name}"),
        count_error_hook=lambda _d, _s, kind: errors.update([kind]),
    )
    driver = SerialDriver(cfg, ctx, positions=positions or PositionRegistry())
    run = Running(driver, errors=errors)

    async def emit(readings: Sequence[Reading | Frame], *, wait_commit: bool = True) -> None:
        run.readings.extend(as_readings(readings))

    await driver.start()
    task = asyncio.create_task(driver.run(emit))
    try:
        yield run
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
