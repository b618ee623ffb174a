"""Cayenne Low Power Payload: repeated ``[channel][type][value]``, big-endian.

Type table and resolutions: docs/protocols.md#2-cayenne-lpp (myDevices table plus the extended
types of the ElectronicCats/TTN Arduino libraries). Hand-written rather than a
PyPI package because the maintained ones are encoders only or return strings
keyed by LPP names; we need canonical quantities and the partial-frame policy
(an unknown type stops parsing but keeps what came before, as the vendor
decoders do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from gateway.drivers.lorawan.codecs import CodecConfigError, DecodeResult
from gateway.quantities import canonical_unit

G = 9.80665  # standard gravity, m/s2 per G
DEG_TO_RAD = 0.017453292519943295

Fields = list[tuple[str, float | int, str]]


def _int(b: bytes, signed: bool) -> int:
    return int.from_bytes(b, "big", signed=signed)


def _scaled(quantity: str, unit: str, divisor: float, signed: bool) -> Callable[[bytes], Fields]:
    def decode(b: bytes) -> Fields:
        raw = _int(b, signed)
        return [(quantity, raw if divisor == 1 else round(raw / divisor, 6), unit)]

    return decode


def _xyz(prefix: str, unit: str, factor: float) -> Callable[[bytes], Fields]:
    def decode(b: bytes) -> Fields:
        axes = ((0, "x"), (2, "y"), (4, "z"))
        return [(f"{prefix}_{axis}", round(_int(b[i : i + 2], True) * factor, 6), unit) for i, axis in axes]

    return decode


def _gps(b: bytes) -> Fields:
    return [
        ("latitude", _int(b[0:3], True) / 10_000, "lat"),
        ("longitude", _int(b[3:6], True) / 10_000, "lon"),
        ("altitude", _int(b[6:9], True) / 100, "m"),
    ]


def _colour(b: bytes) -> Fields:
    return [("colour_r", b[0], "/"), ("colour_g", b[1], "/"), ("colour_b", b[2], "/")]


# type id -> (size in bytes, decoder). Every quantity is canonical (gateway.quantities);
# the LPP types with no fixed meaning (generic, percentage, concentration,
# direction, unixtime, colour) have their own generic quantities there.
TYPES: dict[int, tuple[int, Callable[[bytes], Fields]]] = {
    0: (1, _scaled("digital_input", "/", 1, False)),
    1: (1, _scaled("digital_output", "/", 1, False)),
    2: (2, _scaled("analog_input", "/", 100, True)),
    3: (2, _scaled("analog_output", "/", 100, True)),
    100: (4, _scaled("generic", "/", 1, False)),
    101: (2, _scaled("illuminance", "lx", 1, False)),
    102: (1, _scaled("presence", "/", 1, False)),
    103: (2, _scaled("temperature", "Cel", 10, True)),
    104: (1, _scaled("relative_humidity", "%RH", 2, False)),
    113: (6, _xyz("acceleration", "m/s2", G / 1000)),
    115: (2, _scaled("pressure", "hPa", 10, False)),
    116: (2, _scaled("voltage", "V", 100, False)),
    117: (2, _scaled("current", "A", 1000, False)),
    118: (4, _scaled("frequency", "Hz", 1, False)),
    120: (1, _scaled("percentage", "%", 1, False)),
    121: (2, _scaled("altitude", "m", 1, True)),
    125: (2, _scaled("concentration", "ppm", 1, False)),
    128: (2, _scaled("active_power", "W", 1, False)),
    130: (4, _scaled("distance", "m", 1000, False)),
    131: (4, _scaled("energy_total", "kWh", 1000, False)),
    132: (2, _scaled("direction", "deg", 1, False)),
    133: (4, _scaled("unixtime", "s", 1, False)),
    134: (6, _xyz("angular_velocity", "rad/s", DEG_TO_RAD / 100)),
    135: (3, _colour),
    136: (9, _gps),
    142: (1, _scaled("digital_output", "/", 1, False)),  # "switch": an on/off output
}


class CayenneLPP:
    """Codec ``cayenne_lpp``. Options: ``channels`` maps a channel number to a
    quantity name, for devices that send, say, a CO2 level as an analog input
    (the value keeps the type's scaling; the unit becomes the quantity's canonical one)."""

    name: ClassVar[str] = "cayenne_lpp"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        channels = options.pop("channels", {})
        if options:
            raise CodecConfigError(f"cayenne_lpp: unknown option(s) {sorted(options)}; allowed: channels")
        if not isinstance(channels, Mapping) or not all(isinstance(v, str) for v in channels.values()):
            raise CodecConfigError("cayenne_lpp: channels must map a channel number to a quantity name")
        self._rename = {int(k): v for k, v in channels.items()}

    def decode(self, payload: bytes, f_port: int) -> DecodeResult:
        result = DecodeResult()
        i = 0
        while i < len(payload):
            if i + 2 > len(payload):
                result.problems.append("truncated_payload")
                break
            channel, type_id = payload[i], payload[i + 1]
            entry = TYPES.get(type_id)
            if entry is None:
                # The value size is unknown, so nothing after it can be framed.
                result.problems.append("unknown_type")
                break
            size, decoder = entry
            chunk = payload[i + 2 : i + 2 + size]
            if len(chunk) < size:
                result.problems.append("truncated_payload")
                break
            fields = decoder(chunk)
            for quantity, value, unit in fields:
                # A rename applies to single-value types; renaming the three axes of
                # an accelerometer to one name would make them collide.
                name = self._rename.get(channel, quantity) if len(fields) == 1 else quantity
                if name != quantity:
                    unit = canonical_unit(name) or unit
                result.add(name, value, unit, str(channel))
            i += 2 + size
        return result
