"""Shared helpers of the LoRaWAN driver tests (run a driver against a real broker)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from gateway.buffer import AsyncBuffer
from gateway.driver import DriverContext
from gateway.drivers.lorawan.config import LoRaWANConfig
from gateway.drivers.lorawan.driver import LoRaWANDriver
from gateway.frame import Frame, as_readings
from gateway.model import Reading


class Harness:
    """A driver instance, its collected readings and its error counters.

    With a ``buffer``, readings are also committed to it and rejected messages kept in it, as in the daemon.
    """

    def __init__(self, *, buffer: AsyncBuffer | None = None, **config: Any) -> None:
        self.buffer = buffer
        self.errors: Counter[str] = Counter()
        self.up_events: list[bool] = []
        self.config = LoRaWANConfig.model_validate({"driver": "lorawan", "name": "lns", **config})
        LoRaWANDriver.validate(self.config)
        self.ctx = DriverContext(
            site="s",
            gateway="g",
            source="lns",
            driver="lorawan",
            logger=logging.getLogger("t.lorawan"),
            count_error_hook=lambda d, s, kind: self.errors.update([kind]),
            device_up_hook=lambda d, s, dev, up: self.up_events.append(up),
        )
        if buffer is not None:
            self.ctx.reject_hook = buffer.reject
        self.driver = LoRaWANDriver(self.config, self.ctx)
        self.readings: list[Reading] = []
        self.commits = 0
        self.task: asyncio.Task[None] | None = None

    async def emit(self, readings: Sequence[Reading | Frame], *, wait_commit: bool = True) -> None:
        if self.buffer is not None:
            await self.buffer.append(readings)
        self.readings.extend(as_readings(readings))
        self.commits += 1

    async def start(self) -> None:
        await self.driver.start()
        self.task = asyncio.create_task(self.driver.run(self.emit))
        await wait_for(lambda: self.up_events[-1:] == [True], what="subscription")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.driver.close()

    def of(self, quantity: str) -> list[Reading]:
        return [r for r in self.readings if r.quantity == quantity]


async def wait_for(cond: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
