"""Elsys ERS family: a stream of ``[type][value]`` with a fixed size per type.

Type table: docs/protocols.md#3b-elsys-ers (the vendor's decoder, ``vendor/elsys/elsys.js``
in the TTN device repository). As in the vendor decoder, an unknown type stops
parsing, because its size is unknown; what was decoded before it is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from gateway.drivers.lorawan.codecs import CodecConfigError, DecodeResult

G = 9.80665


def _u(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _s(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


Decoder = Callable[[bytes, DecodeResult], None]


def _one(quantity: str, unit: str, convert: Callable[[bytes], float | int], channel: str | None = None) -> Decoder:
    def decode(b: bytes, r: DecodeResult) -> None:
        r.add(quantity, convert(b), unit, channel)

    return decode


def _acc(b: bytes, r: DecodeResult) -> None:
    for axis, byte in zip("xyz", b, strict=True):
        raw = byte - 256 if byte > 127 else byte
        r.add(f"acceleration_{axis}", round(raw * G / 63, 4), "m/s2")  # +/-63 = 1 G


def _ir(b: bytes, r: DecodeResult) -> None:
    r.add("temperature", _s(b[0:2]) / 10, "Cel", "ir_internal")
    r.add("temperature", _s(b[2:4]) / 10, "Cel", "ir_external")


def _sound(b: bytes, r: DecodeResult) -> None:
    r.add("sound_level", b[0], "dB", "peak")
    r.add("sound_level", b[1], "dB", "avg")


def _unsupported(b: bytes, r: DecodeResult) -> None:
    # GPS (raw binary without a documented scale) and the Grid-EYE matrix are not
    # scalar readings; skip them visibly rather than store something misleading.
    r.problems.append("unsupported_field")


def _ignore(b: bytes, r: DecodeResult) -> None:
    """Vendor debug word: not a measurement."""


TYPES: dict[int, tuple[int, Decoder]] = {
    0x01: (2, _one("temperature", "Cel", lambda b: _s(b) / 10)),
    0x02: (1, _one("relative_humidity", "%RH", _u)),
    0x03: (3, _acc),
    0x04: (2, _one("illuminance", "lx", _u)),
    0x05: (1, _one("motion_count", "count", _u, "pir")),
    0x06: (2, _one("co2", "ppm", _u)),
    0x07: (2, _one("battery_voltage", "V", lambda b: _u(b) / 1000)),
    0x08: (2, _one("voltage", "V", lambda b: _u(b) / 1000, "analog1")),
    0x09: (6, _unsupported),
    0x0A: (2, _one("pulse_count_delta", "count", _u, "1")),
    0x0B: (4, _one("pulse_count", "count", _u, "1")),
    0x0C: (2, _one("temperature", "Cel", lambda b: _s(b) / 10, "ext1")),
    0x0D: (1, _one("digital_input", "/", _u, "ext1")),
    0x0E: (2, _one("distance", "m", lambda b: _u(b) / 1000)),
    0x0F: (1, _one("motion_count", "count", _u, "acc")),
    0x10: (4, _ir),
    0x11: (1, _one("occupancy", "/", _u)),
    0x12: (1, _one("water_leak", "/", _u)),
    0x13: (65, _unsupported),
    0x14: (4, _one("pressure", "hPa", lambda b: _u(b) / 1000)),
    0x15: (2, _sound),
    0x16: (2, _one("pulse_count_delta", "count", _u, "2")),
    0x17: (4, _one("pulse_count", "count", _u, "2")),
    0x18: (2, _one("voltage", "V", lambda b: _u(b) / 1000, "analog2")),
    0x19: (2, _one("temperature", "Cel", lambda b: _s(b) / 10, "ext2")),
    0x1A: (1, _one("digital_input", "/", _u, "ext2")),
    0x1B: (4, _one("voltage", "V", lambda b: _s(b) / 1_000_000, "analog_uv")),
    0x1C: (2, _one("tvoc", "ppb", _u)),
    0x3D: (4, _ignore),
}


class Elsys:
    """Codec ``elsys``. No options."""

    name: ClassVar[str] = "elsys"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        if options:
            raise CodecConfigError(f"elsys takes no options (got {sorted(options)})")

    def decode(self, payload: bytes, f_port: int) -> DecodeResult:
        result = DecodeResult()
        i = 0
        while i < len(payload):
            entry = TYPES.get(payload[i])
            if entry is None:
                result.problems.append("unknown_type")
                break
            size, decoder = entry
            chunk = payload[i + 1 : i + 1 + size]
            if len(chunk) < size:
                result.problems.append("truncated_payload")
                break
            decoder(chunk, result)
            i += 1 + size
        return result
