"""RTU and RTU over TCP: reads through pymodbus' async clients, answered with our typed errors.

Imported by ``Bus`` only for those framings, so that a Modbus TCP gateway never
loads pymodbus (see ``words.py``). pymodbus' own retries are switched off
(``retries=0``) so that ``Bus`` can tell a timeout from a garbled frame and from
"device busy", count each, and retry busy answers too; its automatic reconnect
is off as well (``reconnect_delay=0``) because the bus scheduler owns
reconnecting with its own capped backoff and logs the transition once.
"""

from __future__ import annotations

from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.errors import (
    BadResponse,
    BusUnavailable,
    ExceptionResponse,
    GarbledResponse,
    RequestTimeout,
)
from gateway.drivers.modbus.responses import BIT_RESPONSES, RAW_RESPONSES
from gateway.drivers.modbus.words import register_block

PymodbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient
_REGISTER_TABLES = ("holding", "input")


class PymodbusLink:
    """One pymodbus client, one transaction at a time (``Bus`` holds the lock)."""

    def __init__(self, config: ModbusSourceConfig) -> None:
        self.config = config
        self._rx_in_attempt = False
        self.client = self._make_client()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending and data:
            self._rx_in_attempt = True
        return data

    def _make_client(self) -> PymodbusClient:
        c = self.config
        common: dict[str, Any] = {
            "timeout": c.timeout,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_packet": self._trace_packet,
        }
        client: PymodbusClient
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

    async def read(self, table: str, unit: int, address: int, count: int, timeout: float) -> bytes | list[bool]:
        """Register bytes or bits of one read; the typed errors of ``errors.py``."""
        client = self.client
        # The per-request timeout is a client-wide setting in pymodbus; one
        # transaction at a time (the lock) makes setting it per call safe.
        client.ctx.comm_params.timeout_connect = timeout
        self._rx_in_attempt = False
        try:
            pdu = await _call(client, table, unit, address, count)
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
        if pdu.isError():
            raise ExceptionResponse(pdu.exception_code)
        if table in _REGISTER_TABLES:
            # A RAW_RESPONSES class (registered in _make_client); anything else is an answer of another kind.
            return register_block(getattr(pdu, "raw", b""), unit, count)
        bits = list(pdu.bits[:count])
        if len(bits) < count:
            raise BadResponse(f"unit {unit}: asked for {count} values, got {len(bits)}")
        return bits


async def _call(client: PymodbusClient, table: str, unit: int, address: int, count: int) -> ModbusPDU:
    if table == "holding":
        return await client.read_holding_registers(address, count=count, device_id=unit)
    if table == "input":
        return await client.read_input_registers(address, count=count, device_id=unit)
    if table == "coil":
        return await client.read_coils(address, count=count, device_id=unit)
    return await client.read_discrete_inputs(address, count=count, device_id=unit)
