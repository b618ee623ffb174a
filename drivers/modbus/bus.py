"""One physical bus (serial line or TCP endpoint): one transaction at a time, retries, typed errors.

Modbus TCP goes through our own client (``tcp_client.py``: its docstring says
why); RTU and RTU over TCP through pymodbus' async clients. pymodbus' own
retries are switched off (``retries=0``) so that this module can tell a
timeout from a garbled frame and from "device busy", count each, and retry
busy answers too; pymodbus' automatic reconnect is off as well
(``reconnect_delay=0``) because the bus scheduler owns reconnecting with its
own capped backoff and logs the transition once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

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
from gateway.drivers.modbus.responses import BIT_RESPONSES, RAW_RESPONSES, bits_of, words_of
from gateway.drivers.modbus.tcp_client import FUNCTION_CODES, ModbusTcpClient

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

    def __init__(self, config: ModbusSourceConfig, *, on_retry: Callable[[str, int], None] | None = None) -> None:
        self.config = config
        # called with (error kind, unit) for every failed attempt that is retried
        self.on_retry = on_retry or (lambda kind, unit: None)
        self.pause_s = config.pause_s
        self._lock = asyncio.Lock()
        self._last_end = 0.0
        self._rx_in_attempt = False
        self.client: ModbusTcpClient | AsyncModbusTcpClient | AsyncModbusSerialClient
        if config.transport == "tcp":
            assert config.host is not None
            self.client = ModbusTcpClient(config.host, config.port)
        else:
            self.client = self._make_pymodbus_client()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending and data:
            self._rx_in_attempt = True
        return data

    def _make_pymodbus_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        c = self.config
        common: dict[str, Any] = {
            "timeout": c.timeout,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_packet": self._trace_packet,
        }
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if c.transport == "rtu":
            assert c.serial_port is not None
            client = AsyncModbusSerialClient(
                c.serial_port,
                framer=FramerType.RTU,
                baudrate=c.baudrate,
                parity=c.parity,
                stopbits=c.stopbits,
                bytesize=c.bytesize,
                **common,
            )
        else:
            assert c.host is not None
            client = AsyncModbusTcpClient(c.host, port=c.port, framer=FramerType.RTU, **common)
        # pymodbus drops a TCP connection after a few unanswered requests; on a
        # gateway with many units one dead unit must not cut off the others.
        client.set_max_no_responses(1_000_000)
        # Register answers stay bytes for the block decoder; bits decode by table (drivers/modbus/responses.py).
        for response in RAW_RESPONSES + BIT_RESPONSES:
            client.register(response)
        return client

    @property
    def connected(self) -> bool:
        return self.client.connected

    async def connect(self) -> None:
        client = self.client
        if isinstance(client, ModbusTcpClient):
            await client.connect(self.config.timeout)
            return
        if client.connected:
            return
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:
            raise BusUnavailable(f"cannot open {self.config.endpoint}: {exc}") from exc
        if not ok:
            raise BusUnavailable(f"cannot open {self.config.endpoint}")

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
            client = self.client
            if not client.connected:
                await self.connect()
            if isinstance(client, ModbusTcpClient):
                try:
                    data = await client.read(unit, FUNCTION_CODES[table], address, count, timeout)
                except BusUnavailable:
                    client.close()
                    raise
                finally:
                    self._last_end = asyncio.get_running_loop().time()
                if table in REGISTER_TABLES:
                    return _registers(data, unit, count)
                return _bits(data, unit, count)
            pdu = await self._pymodbus_call(client, table, unit, address, count, timeout)
        if pdu.isError():
            raise ExceptionResponse(pdu.exception_code)
        if table in REGISTER_TABLES:
            # A RAW_RESPONSES class (registered in _make_pymodbus_client); anything else is an answer of another kind.
            return _registers(getattr(pdu, "raw", b""), unit, count)
        bits = list(pdu.bits[:count])
        if len(bits) < count:
            raise BadResponse(f"unit {unit}: asked for {count} values, got {len(bits)}")
        return bits

    async def _pymodbus_call(
        self,
        client: AsyncModbusTcpClient | AsyncModbusSerialClient,
        table: str,
        unit: int,
        address: int,
        count: int,
        timeout: float,
    ) -> ModbusPDU:
        # The per-request timeout is a client-wide setting in pymodbus; one
        # transaction at a time (the lock) makes setting it per call safe.
        client.ctx.comm_params.timeout_connect = timeout
        self._rx_in_attempt = False
        try:
            return await _call(client, table, unit, address, count)
        except ConnectionException as exc:
            client.close()
            raise BusUnavailable(f"{self.config.endpoint}: {exc}") from exc
        except ModbusIOException as exc:
            if not client.connected:
                raise BusUnavailable(f"{self.config.endpoint}: connection lost") from exc
            if self._rx_in_attempt:
                # RTU framing drops a frame whose CRC fails; bytes without a
                # frame for us are noise or a corrupted answer.
                raise GarbledResponse(f"unit {unit}: invalid frame received") from exc
            raise RequestTimeout(f"unit {unit}: no answer within {timeout:g}s") from exc
        except (OSError, ModbusException) as exc:
            client.close()
            raise BusUnavailable(f"{self.config.endpoint}: {exc}") from exc
        finally:
            self._last_end = asyncio.get_running_loop().time()

    async def _pause(self) -> None:
        wait = self._last_end + self.pause_s - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)


def _registers(raw: bytes, unit: int, count: int) -> bytes:
    if len(raw) < 2 * count:
        raise BadResponse(f"unit {unit}: asked for {count} values, got {len(raw) // 2}")
    return raw[: 2 * count] if len(raw) > 2 * count else raw


def _bits(packed: bytes, unit: int, count: int) -> list[bool]:
    """Packed coil or input bits, least significant first, as pymodbus unpacks them (responses.py's table)."""
    if 8 * len(packed) < count:
        raise BadResponse(f"unit {unit}: asked for {count} values, got {8 * len(packed)}")
    bits = bits_of(packed[: (count + 7) // 8])
    return bits[:count] if len(bits) > count else bits


async def _call(
    client: AsyncModbusTcpClient | AsyncModbusSerialClient, table: str, unit: int, address: int, count: int
) -> ModbusPDU:
    if table == "holding":
        return await client.read_holding_registers(address, count=count, device_id=unit)
    if table == "input":
        return await client.read_input_registers(address, count=count, device_id=unit)
    if table == "coil":
        return await client.read_coils(address, count=count, device_id=unit)
    return await client.read_discrete_inputs(address, count=count, device_id=unit)
