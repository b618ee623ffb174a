"""Wire encodings: golden cases, the documented examples, and line-protocol escaping
checked by a real parser (VictoriaMetrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.encoding import (
    EncodingError,
    LineProtocolEncoder,
    dumps_compact,
    group_for_senml,
    reading_json,
    senml_base_name,
    senml_pack,
    senml_record_name,
    to_line_protocol,
)
from gateway.model import Quality, Reading
from gateway.quantities import QUANTITIES
from gateway.sinks.influxdb import InfluxDBSink, InfluxDBSinkConfig
from tests.servers import VictoriaMetrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "data-model.md"
T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z

# The four example readings of docs/data-model.md, "The example readings".
R1 = Reading(T0, "lab", "gw1", "th-1", "temperature", 21.5, "Cel")
R2 = Reading(T0, "lab", "gw1", "th-1", "relative_humidity", 48, "%RH")
R3 = Reading(
    T0, "lab", "gw1", "bay 7", "occupancy", True, "/", tags={"level": "-1", "site": "north"}, quality=Quality.UNCERTAIN
)
R4 = Reading(T0 + 500_000_000, "lab", "gw1", "th-1", "status", "warming up", "/")


def doc_block(marker: str) -> str:
    m = re.search(rf"<!-- example:{marker} -->\n```\w+\n(.*?)\n```", DOC.read_text(), re.S)
    assert m, f"docs/data-model.md has no example block {marker!r}"
    return m.group(1)


# --- the doc cannot drift -----------------------------------------------------------------


def test_every_quantity_is_in_the_doc_with_its_unit() -> None:
    text = DOC.read_text()
    table = text.split("<!-- quantities:begin -->")[1].split("<!-- quantities:end -->")[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| (.+?) \|$", table, re.M)
    expected = [(q.name, q.unit, q.description) for q in QUANTITIES.values()]
    assert rows == expected, "regenerate the table in docs/data-model.md from gateway/quantities.py"


def test_documented_line_protocol_example() -> None:
    assert LineProtocolEncoder().encode([R1, R2, R3, R4]).decode() == doc_block("line-protocol")


def test_documented_senml_examples() -> None:
    assert dumps_compact(senml_pack([R1, R2, R4])).decode() == doc_block("senml-th-1")
    assert dumps_compact(senml_pack([R3])).decode() == doc_block("senml-bay")


def test_documented_per_reading_json_example() -> None:
    assert reading_json(R3).decode() == doc_block("per-reading-json")


# --- line protocol ---------------------------------------------------------------------------


def test_escaping_of_measurement_tags_and_string_fields() -> None:
    r = Reading(
        T0,
        "my site",
        "gw=1",
        "a,b",
        "custom quantity",
        'say "hi" \\o/',
        "/",
        tags={"k ey": "v=1,2", "empty": "", "": "no key"},
    )
    assert to_line_protocol([r]).decode() == (
        r"custom\ quantity,device=a\,b,gateway=gw\=1,k\ ey=v\=1\,2,site=my\ site,unit=/ "
        r'text="say \"hi\" \\o/" ' + str(T0)
    )


def test_numbers_bools_and_quality() -> None:
    batch = [
        R1.with_changes(value=7),
        R1.with_changes(value=False),
        R1.with_changes(value=1e-7, quality=Quality.BAD),
        R1.with_changes(value=-0.0),
        R1.with_changes(value=Quality.BAD),  # an int subclass still becomes a float
    ]
    fields = [line.split(" ")[1] for line in LineProtocolEncoder().lines(batch)]
    assert fields == ["value=7.0", "value=0.0", "value=1e-07,quality=2i", "value=-0.0", "value=2.0"]


def test_the_prefix_cache_keeps_series_apart() -> None:
    enc = LineProtocolEncoder()
    batch = [R1, R1.with_changes(tags={"probe": "ext"}), R1.with_changes(device="th-2"), R1.with_changes(unit="K")]
    assert [line.split(" ")[0] for line in enc.lines(batch * 2)] == [
        "temperature,device=th-1,gateway=gw1,site=lab,unit=Cel",
        "temperature,device=th-1,gateway=gw1,probe=ext,site=lab,unit=Cel",
        "temperature,device=th-2,gateway=gw1,site=lab,unit=Cel",
        "temperature,device=th-1,gateway=gw1,site=lab,unit=K",
    ] * 2


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (R1.with_changes(value=float("nan")), "NaN"),
        (R1.with_changes(value=float("-inf")), "NaN or infinity"),
        (R1.with_changes(tags={"note": "two\nlines"}), "newline"),
        (R1.with_changes(value=b"raw"), "unsupported value type bytes"),
    ],
)
def test_unrepresentable_readings_raise(reading: Reading, reason: str) -> None:
    with pytest.raises(EncodingError, match=reason) as err:
        LineProtocolEncoder().encode([R1, reading])
    assert err.value.reading is reading


TRICKY = ["a b", "a,b", "a=b", "back\\slash", "trailing\\", "ü µg/m³", '"quoted"', "\\,\\ \\="]


async def test_escaping_round_trips_through_a_real_parser(victoria: VictoriaMetrics) -> None:
    """VictoriaMetrics parses what we write; the labels must come back unchanged."""
    cfg = InfluxDBSinkConfig(type="influxdb", url=victoria.url, bucket="b", org="o")
    sink = InfluxDBSink(cfg, site="s", gateway="g")
    batch = [
        Reading(T0 + i * 1_000_000, "s i,te", "g=w", f"dev-{i}", "temperature", float(i), "Cel", tags={"note": text})
        for i, text in enumerate(TRICKY)
    ]
    await sink.open()
    try:
        assert (await sink.send(batch)).outcome.value == "accepted"
    finally:
        await sink.close()
    found = {s["metric"]["device"]: s for s in victoria.export('{__name__="temperature_value"}')}  # type: ignore[index]
    for i, text in enumerate(TRICKY):
        series = found[f"dev-{i}"]
        assert series["metric"]["note"] == text  # type: ignore[index]
        assert series["metric"]["site"] == "s i,te"  # type: ignore[index]
        assert series["metric"]["gateway"] == "g=w"  # type: ignore[index]
        assert series["values"] == [float(i)]
        assert series["timestamps"] == [(T0 + i * 1_000_000) // 1_000_000]


# --- SenML -------------------------------------------------------------------------------------

SENML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-:./_]*$")  # RFC 8428 section 4.5.1


@given(
    site=st.text(min_size=1, max_size=12),
    device=st.text(min_size=1, max_size=12),
    quantity=st.text(min_size=1, max_size=12),
    tags=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_senml_names_are_always_valid(site: str, device: str, quantity: str, tags: dict[str, str]) -> None:
    r = Reading(T0, site, "gw", device, quantity, 1.0, "/", tags=tags)
    [record] = senml_pack([r])
    assert SENML_NAME.match(record["bn"] + record["n"]), record


def test_senml_pack_values_times_and_names() -> None:
    pack = senml_pack([R1, R1.with_changes(ts_ns=T0 - 2_000_000_000, value=21), R3.with_changes(device="th-1")])
    assert pack == [
        {"bn": "lab:gw1:th-1:", "bt": 1714557600.0, "n": "temperature", "u": "Cel", "v": 21.5},
        {"n": "temperature", "u": "Cel", "v": 21, "t": -2.0},
        {"n": "occupancy/level/-1/tag_site/north", "u": "/", "vb": True, "quality": 1},
    ]
    assert senml_base_name("-x", "g w", "d:1") == "x-x:g_w:d_1:"
    assert senml_record_name(R1.with_changes(quantity="pm2_5", tags={"b": "2", "a": "1"})) == "pm2_5/a/1/b/2"
    assert senml_pack([]) == []
    with pytest.raises(EncodingError):
        senml_pack([R1.with_changes(value=float("nan"))])


def test_senml_groups_are_per_device_and_timestamp_in_order() -> None:
    later = R1.with_changes(ts_ns=T0 + 1)
    groups = group_for_senml([R1, R3, later, R2])
    assert groups == [[R1, R2], [R3], [later]]


def test_per_reading_json_round_trip() -> None:
    payload = json.loads(reading_json(R4.with_changes(quality=Quality.BAD)))
    assert payload["time"] == "2024-05-01T10:00:00.500000000Z"
    assert (payload["value"], payload["quality"], payload["tags"]) == ("warming up", "bad", {})
    with pytest.raises(EncodingError):
        reading_json(R1.with_changes(value=float("inf")))
