"""Answers as the poller takes them: register bytes and unpacked bits, checked against the request.

No pymodbus here: Modbus TCP runs on our own client (``tcp_client.py``) and a
gateway without a serial framing never imports pymodbus (2.6 MiB and ~25 ms of
start-up); ``responses.py`` (pymodbus' answer classes) uses the same tables.
"""

from __future__ import annotations

import struct
from itertools import chain

from gateway.drivers.modbus.errors import BadResponse

# byte -> its 8 bits, least significant first (pymodbus' unpack_bitstring order)
_BITS: tuple[tuple[bool, ...], ...] = tuple(tuple(bool(b >> k & 1) for k in range(8)) for b in range(256))


def bits_of(packed: bytes) -> list[bool]:
    """Packed coil or input bits -> one bool per bit, least significant first (pymodbus' order)."""
    return list(chain.from_iterable(map(_BITS.__getitem__, packed)))


def words_of(raw: bytes) -> list[int]:
    """Big-endian register bytes -> the register values (one ``struct`` call)."""
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


def register_block(raw: bytes, unit: int, count: int) -> bytes:
    """The ``2 * count`` bytes of an answer to a register read; BadResponse if it holds fewer."""
    if len(raw) < 2 * count:
        raise BadResponse(f"unit {unit}: asked for {count} values, got {len(raw) // 2}")
    return raw[: 2 * count] if len(raw) > 2 * count else raw


def bit_block(packed: bytes, unit: int, count: int) -> list[bool]:
    """The ``count`` bits of an answer to a coil or input read; BadResponse if it holds fewer."""
    if 8 * len(packed) < count:
        raise BadResponse(f"unit {unit}: asked for {count} values, got {8 * len(packed)}")
    bits = bits_of(packed[: (count + 7) // 8])
    return bits[:count] if len(bits) > count else bits
