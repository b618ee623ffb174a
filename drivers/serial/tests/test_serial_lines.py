"""Line protocols: regex, CSV, JSON lines, key=value, each mapped to canonical quantities."""

from __future__ import annotations

import pytest
from gateway.drivers.serial.config import CSVDecoder, FieldSpec, JSONDecoder, KeyValueDecoder, RegexDecoder
from gateway.drivers.serial.lines import LineError, make_parser, map_fields
from gateway.drivers.serial.stream import StreamDecoder


def _fields(*specs: tuple[str, str]) -> list[FieldSpec]:
    return [FieldSpec(key=k, quantity=q) for k, q in specs]


def decode(decoder: RegexDecoder | CSVDecoder | JSONDecoder | KeyValueDecoder, line: str) -> dict[str, float]:
    measurements, errors = map_fields(make_parser(decoder)(line), decoder.fields)
    assert errors == []
    return {m.quantity: float(m.value) for m in measurements}


def test_regex_named_groups_with_scale_and_offset() -> None:
    dec = RegexDecoder(
        type="regex",
        pattern=r"TEMP:(?P<t>-?\d+) HUM:(?P<h>\d+\.\d)",
        fields=[
            FieldSpec(key="t", quantity="temperature", scale=0.1, offset=-1.0),
            FieldSpec(key="h", quantity="relative_humidity"),
        ],
    )
    assert decode(dec, "sensor1 TEMP:215 HUM:45.5 ok") == pytest.approx(
        {"temperature": 20.5, "relative_humidity": 45.5}
    )


def test_regex_no_match_is_malformed_line() -> None:
    dec = RegexDecoder(type="regex", pattern=r"T=(?P<t>\d+)", fields=_fields(("t", "temperature")))
    with pytest.raises(LineError) as info:
        make_parser(dec)("hello")
    assert info.value.kind == "malformed_line"


def test_csv_columns_and_ignored_column() -> None:
    dec = CSVDecoder(
        type="csv", columns=["", "t", "rh"], fields=_fields(("t", "temperature"), ("rh", "relative_humidity"))
    )
    assert decode(dec, '17,"21.5", 40') == {"temperature": 21.5, "relative_humidity": 40.0}
    with pytest.raises(LineError):
        make_parser(dec)("17,21.5")


def test_csv_semicolon_delimiter() -> None:
    dec = CSVDecoder(type="csv", columns=["t"], delimiter=";", fields=_fields(("t", "temperature")))
    assert decode(dec, "21.5") == {"temperature": 21.5}


def test_json_nested_path_and_unit_conversion() -> None:
    dec = JSONDecoder(
        type="json",
        fields=[FieldSpec(key="env.p", quantity="pressure", unit="Pa"), FieldSpec(key="pm", quantity="pm2_5")],
    )
    assert decode(dec, '{"env": {"p": 101325}, "pm": 7}') == pytest.approx({"pressure": 1013.25, "pm2_5": 7.0})


@pytest.mark.parametrize("line", ["{not json", "[1, 2]", '"text"'])
def test_json_garbage_is_malformed_json(line: str) -> None:
    with pytest.raises(LineError) as info:
        make_parser(JSONDecoder(type="json", fields=_fields(("a", "temperature"))))(line)
    assert info.value.kind == "malformed_json"


def test_keyvalue_default_and_custom_separators() -> None:
    dec = KeyValueDecoder(type="keyvalue", fields=_fields(("T", "temperature"), ("H", "relative_humidity")))
    assert decode(dec, "T=21.5, H=40;X=1") == {"temperature": 21.5, "relative_humidity": 40.0}
    dec2 = KeyValueDecoder(
        type="keyvalue", pair_separator="|", kv_separator=":", fields=_fields(("temp", "temperature"))
    )
    assert decode(dec2, "temp: 19.0|other: x") == {"temperature": 19.0}


def test_a_bad_field_loses_only_that_field() -> None:
    dec = KeyValueDecoder(
        type="keyvalue", fields=_fields(("T", "temperature"), ("H", "relative_humidity"), ("P", "pressure"))
    )
    measurements, errors = map_fields(make_parser(dec)("T=21.5 H=oops"), dec.fields)
    assert [(m.quantity, m.value) for m in measurements] == [("temperature", 21.5)]
    assert sorted(errors) == ["bad_value", "missing_field"]


def test_nan_and_infinity_are_bad_values() -> None:
    dec = KeyValueDecoder(type="keyvalue", fields=_fields(("T", "temperature"), ("H", "relative_humidity")))
    measurements, errors = map_fields(make_parser(dec)("T=nan H=inf"), dec.fields)
    assert measurements == [] and errors == ["bad_value", "bad_value"]


def test_stream_line_decoder_counts_bad_utf8_and_keeps_going() -> None:
    dec = StreamDecoder(KeyValueDecoder(type="keyvalue", fields=_fields(("T", "temperature"))))
    out = dec.feed(b"T=\xff\xfe\nT=20\r\n", 0.0)
    assert out.errors == ["malformed_line"]
    assert [[m.value for m in f] for f in out.frames] == [[20.0]]


def test_field_unit_validation() -> None:
    with pytest.raises(ValueError, match="cannot be converted"):
        FieldSpec(key="t", quantity="temperature", unit="K")
    with pytest.raises(ValueError, match="give its unit"):
        FieldSpec(key="x", quantity="my_custom_thing")
    assert FieldSpec(key="x", quantity="my_custom_thing", unit="widgets").unit == "widgets"
