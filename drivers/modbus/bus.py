"""One physical bus (serial line or TCP endpoint) over pymodbus' async clients.

pymodbus' own retries are switched off (``retries=0``) so that this module can
tell a timeout from a garbled frame and from "device busy", count each, and
retry busy answers too; pymodbus' automatic reconnect is off as well
(``reconnect_delay=0``) because the bus scheduler owns reconnecting with
its own capped backoff and logs the transition once.
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
from gateway.drivers.modbus.responses import BIT_RESPONSES, RAW_RESPONSES, words_of

EXC_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
BUSY_CODES = (5, 6)  # retried: the device is alive but cannot answer now
REGISTER_TABLES = ("holding", "input")

# An answer as handed to the poller: register bytes (big-endian, as sent) or bits.
Block = bytes | list[bool]


class ModbusTransportError(Exception):
    """Base of the typed errors a read can raise."""

    kind = "transport_error"  # the ctx.count_error() kind


class RequestTimeout(ModbusTransportError):
    kind = "timeout"


class GarbledResponse(ModbusTransportError):
    """Bytes came back but no valid frame (bad CRC, wrong length, noise on the line)."""

    kind = "bad_crc"


class ExceptionResponse(ModbusTransportError):
    kind = "exception_response"

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exception {code} ({EXC_NAMES.get(code, 'unknown')})")


class BadResponse(ModbusTransportError):
    kind = "bad_response"


class BusUnavailable(ModbusTransportError):
    """The port cannot be opened or the TCP connection cannot be (re)established."""

    kind = "connection_lost"


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
        self.client = self._make_client()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending and data:
            self._rx_in_attempt = True
        return data

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
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
            framer = FramerType.RTU if c.transport == "rtu_over_tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(c.host, port=c.port, framer=framer, **common)
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
        if self.client.connected:
            return
        try:
            ok = await self.client.connect()
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
            if not self.client.connected:
                await self.connect()
            # The per-request timeout is a client-wide setting in pymodbus; one
            # transaction at a time (the lock) makes setting it per call safe.
            self.client.ctx.comm_params.timeout_connect = timeout
            self._rx_in_attempt = False
            try:
                pdu = await self._call(table, unit, address, count)
            except ConnectionException as exc:
                self.client.close()
                raise BusUnavailable(f"{self.config.endpoint}: {exc}") from exc
            except ModbusIOException as exc:
                if not self.client.connected:
                    raise BusUnavailable(f"{self.config.endpoint}: connection lost") from exc
                if self._rx_in_attempt and self.config.transport != "tcp":
                    # RTU framing drops a frame whose CRC fails; bytes without a
                    # frame for us are noise or a corrupted answer. (On Modbus TCP
                    # the only such bytes are late answers to an earlier request.)
                    raise GarbledResponse(f"unit {unit}: invalid frame received") from exc
                raise RequestTimeout(f"unit {unit}: no answer within {timeout:g}s") from exc
            except (OSError, ModbusException) as exc:
                self.client.close()
                raise BusUnavailable(f"{self.config.endpoint}: {exc}") from exc
            finally:
                self._last_end = asyncio.get_running_loop().time()
        if pdu.isError():
            raise ExceptionResponse(pdu.exception_code)
        if table in REGISTER_TABLES:
            # A RAW_RESPONSES class (registered in _make_client); anything else is an answer of another kind.
            raw: bytes = getattr(pdu, "raw", b"")
            if len(raw) < 2 * count:
                raise BadResponse(f"unit {unit}: asked for {count} values, got {len(raw) // 2}")
            return raw[: 2 * count] if len(raw) > 2 * count else raw
        bits = list(pdu.bits[:count])
        if len(bits) < count:
            raise BadResponse(f"unit {unit}: asked for {count} values, got {len(bits)}")
        return bits

    async def _pause(self) -> None:
        wait = self._last_end + self.pause_s - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _call(self, table: str, unit: int, address: int, count: int) -> ModbusPDU:
        c = self.client
        if table == "holding":
            return await c.read_holding_registers(address, count=count, device_id=unit)
        if table == "input":
            return await c.read_input_registers(address, count=count, device_id=unit)
        if table == "coil":
            return await c.read_coils(address, count=count, device_id=unit)
        return await c.read_discrete_inputs(address, count=count, device_id=unit)
