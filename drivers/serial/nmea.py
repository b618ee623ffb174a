"""NMEA 0183 GGA and RMC sentences with the XOR checksum.

Hand-written rather than pynmea2: we need two sentence types and strict
checksum handling, pynmea2 is not a project dependency, and the parser below
is small enough to read in one go. Format and worked sentences:
docs/protocols.md#7-nmea-0183-gps-gga-and-rmc.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from gateway.model import Quality

from .measurement import Measurement, Position

KNOT_M_S = 1852 / 3600


class NMEAError(ValueError):
    """A sentence that cannot be used; ``kind`` is the error counter name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Fix:
    sentence: str  # "GGA" or "RMC"
    measurements: list[Measurement]
    position: Position | None


def nmea_checksum(body: str) -> int:
    return reduce(lambda acc, ch: acc ^ ord(ch), body, 0)


def resync(line: bytes) -> tuple[bytes, bool]:
    """Drop line noise before the sentence's ``$``; (sentence, True if noise was dropped).

    On a noisy line, garbage with no newline of its own lands in front of the
    next sentence. A sentence never contains ``$``, so the last one starts it,
    just as the binary framers resynchronise on their sync bytes.
    """
    start = line.rfind(b"$")
    if start <= 0:
        return line, False
    return line[start:], bool(line[:start].strip())


def split_sentence(line: bytes) -> tuple[str, list[str]]:
    """Check framing and checksum; return (sentence type, data fields). Raises NMEAError."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise NMEAError("malformed_nmea", "non-ASCII bytes") from exc
    star = text.rfind("*")
    if not text.startswith("$") or star < 0 or len(text) - star != 3:
        raise NMEAError("malformed_nmea", f"not an NMEA sentence: {text[:40]!r}")
    body = text[1:star]
    try:
        expected = int(text[star + 1 :], 16)
    except ValueError as exc:
        raise NMEAError("malformed_nmea", f"bad checksum digits in {text[:40]!r}") from exc
    if nmea_checksum(body) != expected:
        raise NMEAError("bad_checksum", f"checksum mismatch in {text[:40]!r}")
    fields = body.split(",")
    if len(fields[0]) != 5:
        raise NMEAError("malformed_nmea", f"bad sentence tag {fields[0]!r}")
    return fields[0][2:], fields[1:]


def parse_fix(line: bytes) -> Fix | None:
    """A GGA or RMC line -> Fix; other valid sentence types -> None. Raises NMEAError."""
    kind, fields = split_sentence(line)
    try:
        if kind == "GGA":
            return _gga(fields)
        if kind == "RMC":
            return _rmc(fields)
    except (IndexError, ValueError) as exc:
        raise NMEAError("malformed_nmea", f"{kind}: {exc}") from exc
    return None


def _coordinate(value: str, hemisphere: str, degree_digits: int) -> float | None:
    if not value or not hemisphere:
        return None
    degrees = int(value[:degree_digits]) + float(value[degree_digits:]) / 60
    if hemisphere in ("S", "W"):
        return -degrees
    if hemisphere not in ("N", "E"):
        raise ValueError(f"bad hemisphere {hemisphere!r}")
    return degrees


def _latlon(fields: list[str], at: int) -> tuple[float, float] | None:
    lat = _coordinate(fields[at], fields[at + 1], 2)
    lon = _coordinate(fields[at + 2], fields[at + 3], 3)
    if lat is None or lon is None:
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("position out of range")
    return lat, lon


def _gga(fields: list[str]) -> Fix:
    if len(fields) < 14:
        raise ValueError(f"GGA has {len(fields)} fields, expected 14")
    quality = int(fields[5] or 0)
    out = [Measurement("gps_fix_quality", quality, "count")]
    if fields[6]:
        out.append(Measurement("gps_satellites", int(fields[6]), "count"))
    position = None
    latlon = _latlon(fields, 1) if quality > 0 else None  # receivers fill zeros when there is no fix
    if latlon is not None:
        altitude = float(fields[8]) if fields[8] else None
        position = Position(latlon[0], latlon[1], altitude)
        out += [Measurement("latitude", latlon[0], "lat"), Measurement("longitude", latlon[1], "lon")]
        if altitude is not None:
            out.append(Measurement("altitude", altitude, "m"))
    return Fix("GGA", out, position)


def _rmc(fields: list[str]) -> Fix:
    # 11, 12 or 13 data fields depending on the NMEA version (mode, nav status).
    if len(fields) < 11:
        raise ValueError(f"RMC has {len(fields)} fields, expected 11 to 13")
    valid = fields[1] == "A"
    latlon = _latlon(fields, 2) if valid else None
    out: list[Measurement] = []
    position = None
    if latlon is not None:
        position = Position(latlon[0], latlon[1])
        out += [Measurement("latitude", latlon[0], "lat"), Measurement("longitude", latlon[1], "lon")]
    quality = Quality.GOOD if valid else Quality.UNCERTAIN
    if fields[6]:
        out.append(Measurement("speed", float(fields[6]) * KNOT_M_S, "m/s", quality))
    if fields[7]:
        out.append(Measurement("course", float(fields[7]), "deg", quality))
    return Fix("RMC", out, position)
