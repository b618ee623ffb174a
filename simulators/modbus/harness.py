"""Run the Modbus driver against the simulator in-process (tests, golden cases, benchmark)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.aio import cancel_and_wait
from gateway.driver import DriverContext
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.driver import ModbusDriver
from gateway.frame import Frame, as_readings
from gateway.model import Reading


@dataclass
class DriverRun:
    driver: ModbusDriver
    ctx: DriverContext
    readings: list[Reading] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    transitions: list[tuple[str, bool]] = field(default_factory=list)  # (device, up)

    def of(self, device: str, quantity: str | None = None) -> list[Reading]:
        return [r for r in self.readings if r.device == device and (quantity is None or r.quantity == quantity)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s; got {len(self.readings)} readings")
            await asyncio.sleep(0.01)


def make_context(name: str = "src", logger: logging.Logger | None = None) -> DriverContext:
    return DriverContext(site="s", gateway="g", source=name, driver="modbus", logger=logger or logging.getLogger(name))


@contextlib.asynccontextmanager
async def running_driver(source: dict[str, Any] | ModbusSourceConfig, *, name: str = "src") -> AsyncIterator[DriverRun]:
    """Validate, start and run the driver; readings and error kinds are collected on the yielded object."""
    cfg = source if isinstance(source, ModbusSourceConfig) else ModbusSourceConfig.model_validate(source)
    ModbusDriver.validate(cfg)
    ctx = make_context(cfg.name)
    run = DriverRun(ModbusDriver(cfg, ctx), ctx)
    ctx.count_error_hook = lambda driver, src, kind: run.errors.update([kind])
    ctx.device_up_hook = lambda driver, src, dev, up: run.transitions.append((dev, up))

    async def emit(readings: Sequence[Reading | Frame], *, wait_commit: bool = True) -> None:
        run.readings.extend(as_readings(readings))

    await run.driver.start()
    task = asyncio.create_task(run.driver.run(emit), name="modbus-driver")
    try:
        yield run
    finally:
        errors = await cancel_and_wait({"modbus-driver": task}, logger=logging.getLogger(__name__))
        await run.driver.close()
        if errors:
            raise errors["modbus-driver"]
