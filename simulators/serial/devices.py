"""Frame encoders for the simulated serial devices.

Encoders are written from the datasheet layouts (docs/protocols.md#5-serial-particulate-sensors and
docs/protocols.md#7-nmea-0183-gps-gga-and-rmc), independently of the driver's decoders, so a round trip through both
tests something. Each device makes its n-th frame from n alone, so a test can
tell which frame a reading came from.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import reduce


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes
    values: dict[str, float]  # canonical quantity -> value the driver should report


def sds011_frame(pm2_5: float, pm10: float, device_id: int = 0xA160) -> bytes:
    body = struct.pack("<HH", round(pm2_5 * 10), round(pm10 * 10)) + device_id.to_bytes(2, "big")
    return b"\xaa\xc0" + body + bytes([sum(body) & 0xFF, 0xAB])


def sds011_reply(command: int, a: int, b: int, device_id: int = 0xA160) -> bytes:
    body = bytes([command, a, b, 0]) + device_id.to_bytes(2, "big")
    return b"\xaa\xc5" + body + bytes([sum(body) & 0xFF, 0xAB])


def pms5003_frame(pm1: int, pm2_5: int, pm10: int, counts: tuple[int, ...] = (0, 0, 0, 0, 0, 0)) -> bytes:
    words = (pm1, pm2_5, pm10, pm1, pm2_5, pm10, *counts, 0x9700)
    body = b"\x42\x4d" + struct.pack(">H13H", 28, *words)
    return body + struct.pack(">H", sum(body) & 0xFFFF)


def pms5003_reply(command: int, value: int) -> bytes:
    body = b"\x42\x4d\x00\x04" + bytes([command, value])
    return body + struct.pack(">H", sum(body) & 0xFFFF)


def nmea_sentence(body: str) -> bytes:
    checksum = reduce(lambda acc, ch: acc ^ ord(ch), body, 0)
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def _nmea_coordinate(value: float, degree_digits: int, hemispheres: str) -> tuple[str, str]:
    hemisphere = hemispheres[0] if value >= 0 else hemispheres[1]
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60
    return f"{degrees:0{degree_digits}d}{minutes:08.5f}", hemisphere


def gps_frames(n: int) -> tuple[bytes, bytes, dict[str, float]]:
    """A GGA and an RMC sentence for a unit driving slowly north-east from Dublin."""
    lat, lon, alt = 53.361337 + n * 1e-5, -6.505620 + n * 1e-5, 61.7
    lat_s, ns = _nmea_coordinate(lat, 2, "NS")
    lon_s, ew = _nmea_coordinate(lon, 3, "EW")
    hhmmss = f"{(n // 3600) % 24:02d}{(n // 60) % 60:02d}{n % 60:02d}.00"
    gga = nmea_sentence(f"GNGGA,{hhmmss},{lat_s},{ns},{lon_s},{ew},1,08,1.03,{alt:.1f},M,55.2,M,,")
    rmc = nmea_sentence(f"GNRMC,{hhmmss},A,{lat_s},{ns},{lon_s},{ew},1.94,45.0,270125,,,A,V")
    values = {"latitude": round(lat, 6), "longitude": round(lon, 6), "altitude": alt, "course": 45.0}
    return gga, rmc, values


def _wave(n: int, base: float, amplitude: float, period: int = 60) -> float:
    return round(base + amplitude * math.sin(2 * math.pi * n / period), 1)


def make_frame(device: str, n: int) -> Frame:
    """The n-th frame of a simulated device."""
    if device == "sds011":
        pm2_5, pm10 = _wave(n, 12.0, 4.0), _wave(n, 20.0, 6.0)
        return Frame(sds011_frame(pm2_5, pm10), {"pm2_5": pm2_5, "pm10": pm10})
    if device == "pms5003":
        pm1, pm2_5, pm10 = 5 + n % 7, 10 + n % 11, 15 + n % 13
        return Frame(
            pms5003_frame(pm1, pm2_5, pm10, (900, 300, 60, 8, 2, n % 3)), {"pm1": pm1, "pm2_5": pm2_5, "pm10": pm10}
        )
    if device == "nmea":
        gga, rmc, values = gps_frames(n)
        return Frame(gga + rmc, values)
    temperature, humidity, pressure = _wave(n, 21.0, 3.0), _wave(n, 55.0, 10.0), _wave(n, 1013.0, 2.0)
    values = {"temperature": temperature, "relative_humidity": humidity, "pressure": pressure}
    if device == "kv":
        line = f"T={temperature} H={humidity} P={pressure}"
    elif device == "csv":
        line = f"{n},{temperature},{humidity},{pressure}"
    elif device == "json":
        line = json.dumps({"seq": n, "env": {"t": temperature, "rh": humidity, "p": pressure * 100}})
    else:
        raise ValueError(f"unknown device {device!r}")
    return Frame(line.encode() + b"\r\n", values)


DEVICES = ("sds011", "pms5003", "nmea", "kv", "csv", "json")
BINARY = {"sds011": b"\xaa", "pms5003": b"\x42"}  # sync byte the noise generator must avoid


def corrupt_checksum(device: str, frame: bytes) -> bytes:
    """The same frame with a wrong checksum (and nothing else changed)."""
    if device == "sds011":
        return frame[:8] + bytes([(frame[8] + 1) & 0xFF]) + frame[9:]
    if device == "pms5003":
        return frame[:-1] + bytes([(frame[-1] + 1) & 0xFF])
    if device == "nmea":
        first = frame.split(b"\r\n")[0]
        star = first.rindex(b"*")
        wrong = (int(first[star + 1 :], 16) ^ 0x01).to_bytes(1, "big").hex().upper().encode()
        return first[: star + 1] + wrong + b"\r\n"
    # Text lines have no checksum: corrupt a digit into a letter (a malformed value).
    if device == "kv":
        return frame.replace(b"=", b"")  # no key=value pair left: the whole line is malformed
    if device == "csv":
        return frame.replace(b",", b";", 1)
    return b"garbled" + frame
