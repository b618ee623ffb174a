"""Dragino LHT65 temperature/humidity sensor, 11-byte uplink on FPort 2.

Layout and worked example: docs/protocols.md#3a-dragino-lht65 (TTN device repository decoder
``vendor/dragino/lht65.js`` and the LHT65 user manual).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.drivers.lorawan.codecs import CodecConfigError, DecodeResult

PROBE_ABSENT = 0x7FFF  # what the external DS18B20 reads when it is unplugged
EXT_NOT_CONNECTED = 0x80


class DraginoLHT65:
    """Codec ``dragino_lht65``. No options."""

    name: ClassVar[str] = "dragino_lht65"
    FRAME_SIZE: ClassVar[int] = 11

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        if options:
            raise CodecConfigError(f"dragino_lht65 takes no options (got {sorted(options)})")

    def decode(self, payload: bytes, f_port: int) -> DecodeResult:
        result = DecodeResult()
        if f_port not in (0, 2):  # 0 = not reported (TTS omits zero fields)
            result.problems.append("unexpected_fport")
            return result
        if len(payload) < self.FRAME_SIZE:
            result.problems.append("truncated_payload")
            return result
        bat = int.from_bytes(payload[0:2], "big")
        result.add("battery_voltage", (bat & 0x3FFF) / 1000, "V")
        result.add("temperature", int.from_bytes(payload[2:4], "big", signed=True) / 100, "Cel")
        result.add("relative_humidity", (int.from_bytes(payload[4:6], "big") & 0x0FFF) / 10, "%RH")
        ext = payload[6]
        if ext & EXT_NOT_CONNECTED:
            return result
        ext_type = ext & 0x0F
        word = int.from_bytes(payload[7:9], "big")
        if ext_type == 0:
            pass
        elif ext_type == 1:  # E1: DS18B20 probe
            if word != PROBE_ABSENT:
                result.add("temperature", int.from_bytes(payload[7:9], "big", signed=True) / 100, "Cel", "ext")
        elif ext_type == 4:  # interrupt: pin level
            result.add("digital_input", payload[7], "/", "ext")
        elif ext_type == 5:  # illuminance sensor
            result.add("illuminance", word, "lx", "ext")
        elif ext_type == 6:  # ADC, millivolts
            result.add("voltage", word / 1000, "V", "ext")
        else:
            result.problems.append("unsupported_ext_sensor")
        return result
