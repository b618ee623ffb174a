"""The typed errors a Modbus read raises, whichever client (ours for Modbus TCP, pymodbus' for RTU) made it.

Each carries the ``kind`` the driver counts it under (``ctx.count_error``).
"""

from __future__ import annotations

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
