"""Read answers: registers (function codes 3 and 4) kept as the bytes sent, bits (1 and 2) unpacked by table.

pymodbus' own ``ReadHoldingRegistersResponse.decode`` builds a Python list one
``struct.unpack`` per register: about 0.25 us a register, 5-6 % of the
daemon's CPU at 50k values/s. Our poller does not need that list: its block
decoder unpacks the whole answer with one ``struct`` call anyway. These
subclasses are registered with each client's PDU decoder (``client.register``,
pymodbus' extension point for custom responses) and keep the register bytes
(``raw``, big-endian as sent); ``registers`` is still there for any other
reader, built in one call when first asked for.

They inherit everything else (function code, the RTU byte-count position the
framer sizes frames by, ``encode``), so the framing and the transaction
checks are pymodbus' own. ``drivers/modbus/tests/test_modbus_responses.py``
pins both the registration and the decode against pymodbus' reference classes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from gateway.drivers.modbus.words import bits_of, words_of


class _RawRegisters:
    """Mixin: ``decode`` keeps the bytes; ``registers`` is derived on demand."""

    function_code: int
    dev_id: int
    transaction_id: int
    raw: bytes = b""
    _registers: list[int] | None = None

    def decode(self, data: bytes) -> None:
        """As pymodbus' decode (same checks, same count for an odd byte count), without the per-register loop."""
        if (data_len := int(data[0])) >= len(data):
            raise ModbusIOException(
                f"byte_count {data_len} > length of packet {len(data)}",
                function_code=self.function_code,
            )
        self.raw = bytes(data[1 : 1 + data_len // 2 * 2])
        self._registers = None

    @property
    def registers(self) -> Sequence[int]:
        if self._registers is None:
            self._registers = words_of(self.raw)
        return self._registers

    @registers.setter
    def registers(self, value: Sequence[int]) -> None:
        # ModbusPDU.__init__ assigns it (empty for an answer about to be decoded); an instance built with
        # registers (encode, tests) keeps them as raw too.
        if not value:  # no struct call: __init__ reads ``registers`` back right away (``count``)
            self.raw, self._registers = b"", []
            return
        self._registers = list(value)
        self.raw = struct.pack(f">{len(self._registers)}H", *self._registers)

    def __str__(self) -> str:
        # pymodbus' DecodePDU.decode formats every answer it decodes for a debug line, whether debug logging
        # is on or not; the base __str__ formats the register list (4 % of the daemon's CPU at 50k values/s).
        # The wire bytes in hex carry the same information for a C call.
        return (
            f"{type(self).__name__}(dev_id={self.dev_id}, "
            f"transaction_id={self.transaction_id}, registers={len(self.raw) // 2}, "
            f"raw={self.raw.hex()})"
        )


class RawHoldingRegistersResponse(_RawRegisters, ReadHoldingRegistersResponse):
    """Function code 3 answer with ``raw`` register bytes."""


class RawInputRegistersResponse(_RawRegisters, ReadInputRegistersResponse):
    """Function code 4 answer with ``raw`` register bytes."""


class _TableBits:
    """Mixin: ``decode`` as pymodbus' (every byte after the byte count, 8 bits each), by table lookup
    instead of a Python loop over 8 bits per byte."""

    bits: Sequence[bool]
    dev_id: int
    transaction_id: int
    raw: bytes = b""

    def decode(self, data: bytes) -> None:
        self.raw = bytes(data[1:])
        self.bits = bits_of(self.raw)

    def __str__(self) -> str:
        # As _RawRegisters.__str__: pymodbus would format the whole bit list for every answer.
        return (
            f"{type(self).__name__}(dev_id={self.dev_id}, "
            f"transaction_id={self.transaction_id}, bits={len(self.bits)}, raw={self.raw.hex()})"
        )


class FastCoilsResponse(_TableBits, ReadCoilsResponse):
    """Function code 1 answer."""


class FastDiscreteInputsResponse(_TableBits, ReadDiscreteInputsResponse):
    """Function code 2 answer."""


RAW_RESPONSES = (RawHoldingRegistersResponse, RawInputRegistersResponse)
BIT_RESPONSES = (FastCoilsResponse, FastDiscreteInputsResponse)
