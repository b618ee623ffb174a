"""One physical bus (serial line or TCP endpoint): one transaction at a time, retries, typed errors.

Modbus TCP goes through our own client (``tcp_client.py``: its docstring says
why); RTU and RTU over TCP through pymodbus' async clients
(``pymodbus_link.py``), imported only for those framings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.errors import (
    EXC_NAMES,
    BadResponse,
    BusUnavailable,
    ExceptionResponse,
    GarbledResponse,
    ModbusTransportError,
    RequestTimeout,
)
from gateway.drivers.modbus.tcp_client import FUNCTION_CODES, ModbusTcpClient
from gateway.drivers.modbus.words import bit_block, register_block, words_of

if TYPE_CHECKING:
    from gateway.drivers.modbus.pymodbus_link import PymodbusClient, PymodbusLink

__all__ = [
    "BUSY_CODES",
    "EXC_NAMES",
    "BadResponse",
    "Block",
    "Bus",
    "BusUnavailable",
    "ExceptionResponse",
    "GarbledResponse",
    "ModbusTransportError",
    "RequestTimeout",
]

BUSY_CODES = (5, 6)  # retried: the device is alive but cannot answer now
REGISTER_TABLES = ("holding", "input")

# An answer as handed to the poller: register bytes (big-endian, as sent) or bits.
Block = bytes | list[bool]


class Bus:
    """Reads on one bus, one transaction at a time, with an optional pause between frames."""

    def __init__(
        self,
        config: ModbusSourceConfig,
        *,
        on_retry: Callable[[str, int], None] | None = None,
        on_idle_noise: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        # called with (error kind, unit) for every failed attempt that is retried
        self.on_retry = on_retry or (lambda kind, unit: None)
        self.pause_s = config.pause_s
        self._lock = asyncio.Lock()
        self._last_end = 0.0
        self.client: ModbusTcpClient | PymodbusClient
        self._link: PymodbusLink | None = None
        if config.transport == "tcp":
            assert config.host is not None
            self.client = ModbusTcpClient(config.host, config.port, on_idle_noise=on_idle_noise)
        else:
            from gateway.drivers.modbus.pymodbus_link import PymodbusLink

            self._link = PymodbusLink(config)
            self.client = self._link.client  # pymodbus' own client, for tests and tracing

    @property
    def connected(self) -> bool:
        return self.client.connected

    async def connect(self) -> None:
        if self._link is not None:
            await self._link.connect()
            return
        assert isinstance(self.client, ModbusTcpClient)
        await self.client.connect(self.config.timeout)

    def close(self) -> None:
        self.client.close()

    async def read(
        self, table: str, unit: int, address: int, count: int, *, timeout: float, retries: int
    ) -> list[int] | list[bool]:
        """Read once, retrying timeouts, garbled frames and busy answers ``retries`` times."""
        block = await self.read_block(table, unit, address, count, timeout=timeout, retries=retries)
        return words_of(block) if isinstance(block, bytes) else block

    async def read_block(
        self, table: str, unit: int, address: int, count: int, *, timeout: float, retries: int
    ) -> Block:
        """As ``read``, but registers come as their ``2 * count`` bytes (big-endian): the poller's hot path."""
        last: ModbusTransportError = RequestTimeout("no answer")
        for attempt in range(retries + 1):
            try:
                return await self._read_once(table, unit, address, count, timeout)
            except ExceptionResponse as exc:
                if exc.code not in BUSY_CODES:
                    raise
                last = exc
                if attempt < retries:
                    self.on_retry("device_busy", unit)
                    await asyncio.sleep(min(timeout, 0.05 * 2**attempt))  # give a busy device a moment
            except (RequestTimeout, GarbledResponse) as exc:
                last = exc
                if attempt < retries:
                    self.on_retry(exc.kind, unit)
        raise last

    async def _read_once(self, table: str, unit: int, address: int, count: int, timeout: float) -> Block:
        async with self._lock:
            if self.pause_s > 0:  # most buses have no pause: spare them a coroutine per request
                await self._pause()
            if not self.client.connected:
                await self.connect()
            try:
                if self._link is not None:
                    return await self._link.read(table, unit, address, count, timeout)
                client = self.client
                assert isinstance(client, ModbusTcpClient)
                try:
                    data = await client.read(unit, FUNCTION_CODES[table], address, count, timeout)
                except BusUnavailable:
                    client.close()
                    raise
            finally:
                self._last_end = asyncio.get_running_loop().time()
        if table in REGISTER_TABLES:
            return register_block(data, unit, count)
        return bit_block(data, unit, count)

    async def _pause(self) -> None:
        wait = self._last_end + self.pause_s - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
