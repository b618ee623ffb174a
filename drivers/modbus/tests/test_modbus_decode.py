"""Decoding of every type x word/byte order against known register vectors."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.drivers.modbus.config import FieldSpec
from gateway.drivers.modbus.decode import DATA_TYPES, WORD_ORDERS, DecodeError, decode_registers, encode_value
from gateway.drivers.modbus.poller import field_value
from gateway.model import Quality

# --- vendor vectors: docs/protocols.md#6a-eastron-sdm630-and-sdm120-energy-meters (Eastron) and
# docs/protocols.md#6b-xy-md02-class-rs-485-temperature-and-humidity-sensors (XY-MD02) ---


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([0x4366, 0x199A], 230.100006),  # §6a "response for 230.1 V: 01 04 04 43 66 19 9A 85 E4"
        ([0x4640, 0xE6AE], 12345.67),  # §6a "response for 12345.67 kWh: 01 04 04 46 40 E6 AE 24 C4"
        ([0x4366, 0x0000], 230.0),  # §6a float check values
        ([0x4248, 0x0000], 50.0),
        ([0x40A6, 0x6666], 5.2),
    ],
)
def test_eastron_float32_abcd_vectors(words: list[int], expected: float) -> None:
    value = decode_registers(words, "float32", "ABCD")
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("word", "data_type", "expected"),
    [
        (0x0131, "int16", 30.5),  # §6b read temperature: 01 04 02 01 31 79 74 -> 30.5 °C
        (0x0222, "uint16", 54.6),  # §6b read humidity: 01 04 02 02 22 38 49 -> 54.6 %RH
        (0xFF33, "int16", -20.5),  # §6b negative temperature 0xFF33 = -205 -> -20.5 °C
    ],
)
def test_xy_md02_vectors(word: int, data_type: str, expected: float) -> None:
    spec = FieldSpec(quantity="temperature", table="input", address=1, type=data_type, scale=0.1)  # type: ignore[arg-type]
    value, unit, quality, status = field_value(spec, [word])
    assert value == pytest.approx(expected)
    assert (unit, quality, status) == ("Cel", Quality.GOOD, "ok")


# --- struct-derived vectors: every type x every order ---------------------------------------
# The wire layout is spelled out with letters, independently of the implementation:
# A is the most significant byte of the value.
_LAYOUT_32 = {"ABCD": "ABCD", "CDAB": "CDAB", "BADC": "BADC", "DCBA": "DCBA"}
_LAYOUT_64 = {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"}
_LAYOUT_16 = {"ABCD": "AB", "CDAB": "AB", "BADC": "BA", "DCBA": "BA"}

_SAMPLES: dict[str, tuple[str, float | int]] = {
    "int16": ("h", -12345),
    "uint16": ("H", 0xBEEF),
    "int32": ("i", -123456789),
    "uint32": ("I", 0xDEADBEEF),
    "int64": ("q", -1234567890123456789),
    "uint64": ("Q", 0x0123456789ABCDEF),
    "float32": ("f", -1234.5),
    "float64": ("d", 6.02214076e23),
}


def wire_words(fmt: str, value: float | int, order: str) -> list[int]:
    big = struct.pack(f">{fmt}", value)
    layout = {2: _LAYOUT_16, 4: _LAYOUT_32, 8: _LAYOUT_64}[len(big)][order]
    wire = bytes(big["ABCDEFGH".index(letter)] for letter in layout)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


@pytest.mark.parametrize("order", WORD_ORDERS)
@pytest.mark.parametrize("data_type", list(_SAMPLES))
def test_every_type_and_order(data_type: str, order: str) -> None:
    fmt, expected = _SAMPLES[data_type]
    words = wire_words(fmt, expected, order)
    assert decode_registers(words, data_type, order) == expected  # type: ignore[arg-type]
    assert encode_value(expected, data_type, order) == words  # type: ignore[arg-type]


def test_known_cdab_and_badc_float_words() -> None:
    # 230.1 (0x4366199A) as a word-swapped (CDAB) and a byte-swapped (BADC) device would send it
    assert decode_registers([0x199A, 0x4366], "float32", "CDAB") == pytest.approx(230.1, rel=1e-6)
    assert decode_registers([0x6643, 0x9A19], "float32", "BADC") == pytest.approx(230.1, rel=1e-6)
    assert decode_registers([0x9A19, 0x6643], "float32", "DCBA") == pytest.approx(230.1, rel=1e-6)


def test_string_bool_bit_and_mask() -> None:
    assert decode_registers([0x5344, 0x4D36, 0x3330, 0x0000], "string") == "SDM630"
    assert decode_registers([0x4453, 0x364D, 0x3033], "string", "BADC") == "SDM630"
    assert decode_registers([0x0001], "bool") is True
    assert decode_registers([0x0000], "bool") is False
    assert decode_registers([0b1010_0000], "uint16", bit=5) is True
    assert decode_registers([0b1010_0000], "uint16", bit=6) is False
    assert decode_registers([0x0A50], "uint16", mask=0x0F00) == 0x0A
    assert decode_registers([0x0001, 0x0000], "uint32", "CDAB", bit=16) is False
    assert decode_registers([0x0001, 0x0000], "uint32", "ABCD", bit=16) is True


def test_wrong_register_count_is_an_error() -> None:
    with pytest.raises(DecodeError):
        decode_registers([1], "float32")
    with pytest.raises(DecodeError):
        decode_registers([0x1_0000], "uint16")


@given(
    data_type=st.sampled_from([t for t in DATA_TYPES if t not in ("string", "bool")]),
    order=st.sampled_from(WORD_ORDERS),
    data=st.data(),
)
def test_round_trip(data_type: str, order: str, data: st.DataObject) -> None:
    fmt, _ = _SAMPLES[data_type]
    if fmt in "fd":
        value: float | int = data.draw(st.floats(allow_nan=False, width=32 if fmt == "f" else 64))
    else:
        bits = struct.calcsize(fmt) * 8
        signed = fmt.islower()
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        value = data.draw(st.integers(lo, hi))
    words = encode_value(value, data_type, order)  # type: ignore[arg-type]
    assert words == wire_words(fmt, value, order)
    back = decode_registers(words, data_type, order)  # type: ignore[arg-type]
    assert back == value or (isinstance(back, float) and math.isclose(back, value))


def test_scale_offset_range_and_unit_alias() -> None:
    spec = FieldSpec(quantity="relative_humidity", table="input", address=2, scale=0.1, valid_max=100)
    assert field_value(spec, [1001])[2:] == (Quality.BAD, "out_of_range")
    assert field_value(spec, [999])[2:] == (Quality.GOOD, "ok")
    energy_wh = FieldSpec(quantity="energy_import", unit="Wh", address=0, type="uint32")
    value, unit, _, _ = field_value(energy_wh, [0x0001, 0xE240])  # 123456 Wh
    assert value == pytest.approx(123.456)
    assert unit == "kWh"
    nan = FieldSpec(quantity="voltage", address=0, type="float32")
    assert field_value(nan, [0x7FC0, 0x0000])[2:] == (Quality.BAD, "not_finite")
