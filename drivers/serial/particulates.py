"""Nova SDS011 and Plantower PMS5003 frames: framing parameters, decoders, commands.

Frame layouts, checksums and worked examples: docs/protocols.md#5-serial-particulate-sensors
sections 5a (SDS011) and 5b (PMS5003).
"""

from __future__ import annotations

import struct

from gateway.model import Quality

from .framing import BinaryFramer
from .measurement import Measurement

# --- Nova SDS011 -------------------------------------------------------------

SDS011_DATA = 0xC0
SDS011_REPLY = 0xC5  # answer to a command; carries no measurement
SDS011_MAX = 999.9  # datasheet range, µg/m³


def _sds011_length(header: bytes | bytearray) -> int | None:
    return 10 if header[1] in (SDS011_DATA, SDS011_REPLY) else None


def _sds011_check(frame: bytes) -> str | None:
    if frame[9] != 0xAB:
        return "bad_frame"
    if sum(frame[2:8]) & 0xFF != frame[8]:
        return "bad_checksum"
    return None


def sds011_framer(frame_timeout: float = 0.5) -> BinaryFramer:
    return BinaryFramer(
        sync=b"\xaa", header_len=2, frame_length=_sds011_length, check=_sds011_check, frame_timeout=frame_timeout
    )


def decode_sds011(frame: bytes) -> list[Measurement]:
    """A checked 10-byte frame -> PM2.5 and PM10 (little-endian tenths of µg/m³)."""
    if frame[1] != SDS011_DATA:
        return []
    pm25_raw, pm10_raw = struct.unpack_from("<HH", frame, 2)
    return [_pm("pm2_5", pm25_raw / 10, SDS011_MAX), _pm("pm10", pm10_raw / 10, SDS011_MAX)]


def sds011_command(command: int, data: bytes = b"", device_id: int = 0xFFFF) -> bytes:
    """A 19-byte command frame ``AA B4 <cmd> <12 data> <id> <cs> AB`` (0xFFFF = any sensor)."""
    body = bytes([command]) + data.ljust(12, b"\x00") + device_id.to_bytes(2, "big")
    return b"\xaa\xb4" + body + bytes([sum(body) & 0xFF, 0xAB])


def sds011_set_query_mode(query: bool) -> bytes:
    return sds011_command(0x02, bytes([1, 1 if query else 0]))


def sds011_query() -> bytes:
    return sds011_command(0x04)


def sds011_set_working_period(minutes: int) -> bytes:
    """0 = continuous (1 frame/s); 1..30 = one measurement every n minutes, fan off in between."""
    return sds011_command(0x08, bytes([1, minutes]))


# --- Plantower PMS5003 --------------------------------------------------------

PMS_DATA_LENGTH = 28  # 13 words + checksum
PMS_REPLY_LENGTH = 4  # answer to a mode command
PMS_MAX = 1000.0  # datasheet maximum, µg/m³

_PMS_COUNTS = (
    "particle_count_0_3",
    "particle_count_0_5",
    "particle_count_1",
    "particle_count_2_5",
    "particle_count_5",
    "particle_count_10",
)


def _pms_length(header: bytes | bytearray) -> int | None:
    length = int.from_bytes(header[2:4], "big")
    return 4 + length if length in (PMS_DATA_LENGTH, PMS_REPLY_LENGTH) else None


def _pms_check(frame: bytes) -> str | None:
    if sum(frame[:-2]) & 0xFFFF != int.from_bytes(frame[-2:], "big"):
        return "bad_checksum"
    return None


def pms5003_framer(frame_timeout: float = 0.5) -> BinaryFramer:
    return BinaryFramer(
        sync=b"\x42\x4d", header_len=4, frame_length=_pms_length, check=_pms_check, frame_timeout=frame_timeout
    )


def decode_pms5003(frame: bytes, *, particle_counts: bool = False) -> list[Measurement]:
    """A checked 32-byte frame -> atmospheric PM1.0/PM2.5/PM10 (words 4-6), optionally counts (7-12)."""
    if len(frame) != 4 + PMS_DATA_LENGTH:
        return []
    words = struct.unpack_from(">13H", frame, 4)
    out = [
        _pm("pm1", float(words[3]), PMS_MAX),
        _pm("pm2_5", float(words[4]), PMS_MAX),
        _pm("pm10", float(words[5]), PMS_MAX),
    ]
    if particle_counts:
        out += [Measurement(q, words[6 + i], "count") for i, q in enumerate(_PMS_COUNTS)]
    return out


def pms5003_command(command: int, value: int) -> bytes:
    body = b"\x42\x4d" + bytes([command]) + value.to_bytes(2, "big")
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def pms5003_set_passive(passive: bool) -> bytes:
    return pms5003_command(0xE1, 0 if passive else 1)


def pms5003_read() -> bytes:
    return pms5003_command(0xE2, 0)


def _pm(quantity: str, value: float, maximum: float) -> Measurement:
    quality = Quality.GOOD if value <= maximum else Quality.BAD
    return Measurement(quantity, value, "ug/m3", quality)
