"""The Modbus driver: one source = one bus (serial line or TCP endpoint) with its devices."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from gateway.driver import DeviceCatalogue, DriverContext, Emit, PushDriver, SourceConfig
from gateway.drivers.modbus.bus import Bus
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.devices import ResolvedDevice, resolve_devices
from gateway.drivers.modbus.poller import DevicePoller
from gateway.drivers.modbus.scheduler import BusScheduler


class _DropPymodbusNoResponse(logging.Filter):
    """pymodbus logs every unanswered request at ERROR; the scheduler already
    logs a dead device once on the transition and counts each timeout, so these
    lines would only flood the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("No response received" in msg or "Not connected, trying to connect" in msg)


_FILTER = _DropPymodbusNoResponse()


def quiet_pymodbus() -> None:
    logger = logging.getLogger("pymodbus.logging")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


class ModbusDriver(PushDriver):
    """Polls every device of one bus on its own aligned ticks, one transaction at a time."""

    config_model: ClassVar[type[SourceConfig]] = ModbusSourceConfig

    def __init__(self, config: SourceConfig, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, ModbusSourceConfig)
        self.cfg = config
        self.devices: list[ResolvedDevice] = []
        self.bus: Bus | None = None
        self.scheduler: BusScheduler | None = None

    @classmethod
    def validate(cls, config: SourceConfig) -> None:
        assert isinstance(config, ModbusSourceConfig)
        resolve_devices(config)  # DeviceSetupError(s) name the key path; the loader reports each

    @classmethod
    def catalogue(cls, config: SourceConfig) -> DeviceCatalogue:
        assert isinstance(config, ModbusSourceConfig)
        return DeviceCatalogue({d.name: frozenset(f.quantity for f in d.fields) for d in resolve_devices(config)})

    async def start(self) -> None:
        quiet_pymodbus()
        self.devices = resolve_devices(self.cfg)
        self.bus = Bus(
            self.cfg,
            on_retry=lambda kind, unit: self.ctx.count_error(kind),
            on_idle_noise=lambda: self.ctx.count_error("stream_noise"),  # Modbus TCP: bytes no request asked for
        )
        pollers = [DevicePoller(d, self.bus, self.ctx) for d in self.devices]
        self.scheduler = BusScheduler(bus=self.bus, pollers=pollers, ctx=self.ctx, backoff_max_s=self.cfg.backoff_max)
        # Not connecting here on purpose: an unplugged adapter or a dead TCP
        # endpoint is a runtime condition the scheduler retries and logs once,
        # not a reason for the core to restart the driver in a loop.

    async def run(self, emit: Emit) -> None:
        if self.scheduler is None:
            await self.start()
        assert self.scheduler is not None
        await self.scheduler.run(emit)

    async def close(self) -> None:
        if self.bus is not None:
            self.bus.close()

    def status(self) -> dict[str, Any]:
        if self.scheduler is None:
            return {}
        return {
            "endpoint": self.cfg.endpoint,
            "connected": self.bus.connected if self.bus else False,
            "devices": {
                s.poller.device.name: {"up": not s.down, "polls": s.polls, "missed_ticks": s.missed_ticks}
                for s in self.scheduler.slots
            },
        }
