"""Register words <-> values for every data type and word/byte order.

pymodbus' ``convert_from_registers`` only knows the word order (big/little),
not byte-swapped devices (``BADC``, ``DCBA``), so the conversion is written
here on top of ``struct``; it is the one place both the driver and the
simulator use, and it is tested against vendor vectors (docs/protocols.md#6-modbus-devices).

Order names follow the usual 32-bit convention; for 64-bit values they mean
the same two operations (``CDAB`` = registers in reverse order, ``BADC`` =
bytes swapped inside each register), e.g. ``CDAB`` reads ``GH EF CD AB``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Literal

DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

DATA_TYPES: tuple[DataType, ...] = (
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string",
)  # fmt: skip
WORD_ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")

_STRUCT: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}

RegisterValue = int | float | bool | str


class DecodeError(ValueError):
    """The registers do not hold a value of the expected shape."""


def register_count(data_type: DataType, length: int = 1) -> int:
    """Number of 16-bit registers a value occupies (``length`` is for strings)."""
    if data_type == "bool":
        return 1
    if data_type == "string":
        return length
    return _STRUCT[data_type][1]


def _reorder(words: Sequence[int], order: WordOrder) -> bytes:
    """Registers as the device sent them -> big-endian bytes of the value."""
    ws = list(words)
    if order in ("CDAB", "DCBA"):
        ws.reverse()
    raw = b"".join(w.to_bytes(2, "big") for w in ws)
    if order in ("BADC", "DCBA"):
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    return raw


def _unorder(raw: bytes, order: WordOrder) -> list[int]:
    """Inverse of ``_reorder``: big-endian value bytes -> registers on the wire."""
    if order in ("BADC", "DCBA"):
        raw = b"".join(raw[i + 1 : i + 2] + raw[i : i + 1] for i in range(0, len(raw), 2))
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    return words


def decode_registers(
    words: Sequence[int],
    data_type: DataType,
    order: WordOrder = "ABCD",
    *,
    bit: int | None = None,
    mask: int | None = None,
) -> RegisterValue:
    """Decode a value from 16-bit registers.

    ``bit`` selects one bit (0 = least significant) of the (re-ordered) integer;
    ``mask`` keeps the masked bits and shifts them down to bit 0, so a mask of
    0x0F00 yields 0..15.
    """
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise DecodeError(f"register value out of 0..0xFFFF in {list(words)}")
    if data_type == "string":
        raw = _reorder(words, order)
        return raw.rstrip(b"\x00 ").decode("latin-1")
    if data_type == "bool":
        if len(words) != 1:
            raise DecodeError(f"bool needs 1 register, got {len(words)}")
        raw_int = int.from_bytes(_reorder(words, order), "big")
        return bool(raw_int >> (bit or 0) & 1) if bit is not None else raw_int != 0
    fmt, n = _STRUCT[data_type]
    if len(words) != n:
        raise DecodeError(f"{data_type} needs {n} registers, got {len(words)}")
    raw = _reorder(words, order)
    if bit is not None or mask is not None:
        unsigned = int.from_bytes(raw, "big")
        if bit is not None:
            return bool(unsigned >> bit & 1)
        assert mask is not None
        shift = (mask & -mask).bit_length() - 1
        return (unsigned & mask) >> shift
    value: int | float = struct.unpack(f">{fmt}", raw)[0]
    return value


def encode_value(value: RegisterValue, data_type: DataType, order: WordOrder = "ABCD", *, length: int = 1) -> list[int]:
    """Value -> registers as a device with this type and order would send them (simulator side)."""
    if data_type == "string":
        raw = str(value).encode("latin-1")[: length * 2].ljust(length * 2, b"\x00")
        return _unorder(raw, order)
    if data_type == "bool":
        return _unorder((1 if value else 0).to_bytes(2, "big"), order)
    fmt, _n = _STRUCT[data_type]
    raw = struct.pack(f">{fmt}", float(value) if fmt in "fd" else int(value))
    return _unorder(raw, order)


def scale_divisor(scale: float) -> int | None:
    """``n`` when ``scale`` is ``1/n`` for a whole ``n`` (0.1, 0.01, 0.001, 0.5...), else None.

    A register scaled by 0.01 is a count of hundredths: ``raw / 100`` is the
    correctly rounded decimal (23017 -> 230.17), where ``raw * 0.01`` carries the
    binary error of 0.01 into 13 % of uint16 values (``230.17000000000002``).
    Those digits would travel in every payload, and formatting them costs more
    (``repr`` of 40 such values: 271 ns a value divided, 343 ns multiplied).
    """
    if not 0.0 < scale < 1.0:
        return None
    n = round(1.0 / scale)
    return n if n <= 10**9 and 1.0 / n == scale else None


def apply_scale(raw: int | float, scale: float, offset: float) -> float:
    """``raw * scale + offset``, a decimal scale applied as a division (see ``scale_divisor``)."""
    divisor = scale_divisor(scale)
    return (raw / divisor if divisor is not None else raw * scale) + offset
