"""Regression tests of issue 8 (field hardening): inputs that made a serial decoder throw or lose frames.

Each case was found by fuzzing; each must give readings or a counted refusal
(an error kind), and the good lines around it must still be decoded.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.drivers.serial.config import CSVDecoder, FieldSpec, JSONDecoder, NMEADecoder
from gateway.drivers.serial.stream import StreamDecoder
from gateway.simulators.serial.devices import nmea_sentence

TEMP = [FieldSpec(key="t", quantity="temperature")]


def _feed(decoder: StreamDecoder, data: bytes) -> tuple[list[float], list[str]]:
    out = decoder.feed(data, 0.0)
    return [float(m.value) for frame in out.frames for m in frame], out.errors


def test_csv_stray_carriage_return_is_a_malformed_line_and_the_next_lines_survive() -> None:
    # b"\r,\n" made csv raise _csv.Error ("new-line character seen in unquoted field"),
    # which restarted the driver and lost the good lines read in the same chunk.
    dec = StreamDecoder(CSVDecoder(type="csv", columns=["id", "t"], fields=TEMP))
    values, errors = _feed(dec, b"1,20.5\n\r,\n2,21.5\n3,22.5\n")
    assert values == [20.5, 21.5, 22.5]
    assert errors == ["malformed_line"]


def test_json_integer_beyond_float_range_loses_that_field_only() -> None:
    # b'{"t": 999...9}' (400 digits) raised OverflowError converting to float.
    dec = StreamDecoder(JSONDecoder(type="json", fields=TEMP))
    values, errors = _feed(dec, b'{"t": ' + b"9" * 400 + b'}\n{"t": 19.5}\n')
    assert values == [19.5]
    assert errors == ["bad_value"]


def test_json_scaled_beyond_float_range_loses_that_field_only() -> None:
    dec = StreamDecoder(JSONDecoder(type="json", fields=[FieldSpec(key="t", quantity="temperature", scale=10)]))
    values, errors = _feed(dec, b'{"t": 1e308}\n{"t": 2}\n')
    assert values == [20.0]
    assert errors == ["bad_value"]


def test_json_nested_too_deeply_is_malformed_json() -> None:
    # With max_line_length = 65536, b"[" * 5000 + b"]" * 5000 raised RecursionError.
    dec = StreamDecoder(JSONDecoder(type="json", max_line_length=65536, fields=TEMP))
    nested_dicts = b'{"a": ' * 3000 + b"1" + b"}" * 3000
    values, errors = _feed(dec, b"[" * 5000 + b"]" * 5000 + b"\n" + nested_dicts + b'\n{"t": 7}\n')
    assert values == [7.0]
    assert errors == ["malformed_json", "malformed_json"]


def test_json_integer_of_more_than_4300_digits_is_malformed_json() -> None:
    dec = StreamDecoder(JSONDecoder(type="json", max_line_length=65536, fields=TEMP))
    values, errors = _feed(dec, b'{"t": ' + b"1" * 5000 + b'}\n{"t": 8}\n')
    assert values == [8.0]
    assert errors == ["malformed_json"]


GGA = nmea_sentence("GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")


def test_nmea_resyncs_on_dollar_after_noise_without_newline() -> None:
    # Noise with no newline of its own used to glue onto the next sentence and
    # make it count as malformed: 7 of 50 fixes lost on a noisy line.
    dec = StreamDecoder(NMEADecoder(type="nmea", sentences=["GGA"]))
    out = dec.feed(b"\x13\xfe#x9" + GGA + b"%&" + GGA + GGA, 0.0)
    assert len(out.frames) == 3
    assert out.errors == ["garbage", "garbage"]
    assert out.position is not None and round(out.position.latitude, 4) == 48.1173


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"$", b"").replace(b"\n", b"")), max_size=10))
def test_nmea_every_sentence_after_noise_is_decoded(noises: list[bytes]) -> None:
    dec = StreamDecoder(NMEADecoder(type="nmea", sentences=["GGA"]))
    out = dec.feed(b"".join(noise + GGA for noise in noises), 0.0)
    assert len(out.frames) == len(noises)
    assert out.errors.count("garbage") == sum(1 for noise in noises if noise.strip())
