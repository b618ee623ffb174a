"""The Reading type, the canonical quantity table and the normaliser."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest

from gateway.metrics import Metrics
from gateway.model import Quality, Reading
from gateway.normalise import Normaliser
from gateway.quantities import QUANTITIES, UNIT_ALIASES, convert_to_canonical

SENML_UNITS = {
    # RFC 8428 section 12.1 primary units and RFC 8798 secondary units used by the table.
    "m", "kg", "g", "s", "A", "K", "cd", "mol", "Hz", "rad", "sr", "N", "Pa", "J", "W", "C", "V", "F", "Ohm",
    "S", "Wb", "T", "H", "Cel", "lm", "lx", "Bq", "Gy", "Sv", "kat", "m2", "m3", "l", "m/s", "m/s2", "m3/s",
    "l/s", "W/m2", "cd/m2", "bit", "bit/s", "lat", "lon", "pH", "dB", "dBW", "Bspl", "count", "/", "%", "%RH",
    "%EL", "EL", "1/s", "1/min", "beat/min", "beats", "S/m", "B", "VA", "VAs", "var", "vars", "J/m", "kg/m3",
    "deg", "ms", "min", "h", "MHz", "kW", "kVA", "kvar", "Ah", "Wh", "kWh", "varh", "kvarh", "kVAh", "Wh/km",
    "KiB", "GB", "Mbit/s", "B/s", "MB/s", "mV", "mA", "dBm", "ug/m3", "mm/h", "m/h", "ppm", "/100", "/1000",
    "hPa", "mm", "cm", "km", "km/h", "ppb", "ppt",
}  # fmt: skip
# Quantities SenML has no unit for ("where one exists" in the data model): the SI unit.
NOT_IN_SENML = {"rad/s"}


def reading(**kw: object) -> Reading:
    base: dict[str, object] = dict(ts_ns=1, site="s", gateway="g", device="d", quantity="temperature", value=20.5,
                                   unit="Cel")  # fmt: skip
    base.update(kw)
    return Reading(**base)  # type: ignore[arg-type]


def test_reading_is_frozen_and_slotted() -> None:
    r = reading()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.value = 3  # type: ignore[misc]
    assert not hasattr(r, "__dict__")
    assert r.with_changes(value=1.0).value == 1.0 and r.value == 20.5
    assert reading(tags={"a": "b"}) == reading(tags={"a": "b"})
    assert hash(reading(tags={"a": "b"})) == hash(reading(tags={"a": "c"}))  # tags are not hashed


def test_every_canonical_unit_is_a_senml_unit() -> None:
    assert {q.unit for q in QUANTITIES.values()} <= SENML_UNITS | NOT_IN_SENML
    assert {unit for unit, _ in UNIT_ALIASES.values()} <= SENML_UNITS


def test_unit_conversion() -> None:
    assert convert_to_canonical("active_power", 1.5, "kW") == (1500.0, "W")
    assert convert_to_canonical("energy_import", 2500.0, "Wh") == (2.5, "kWh")
    assert convert_to_canonical("pressure", 101325.0, "Pa") == pytest.approx((1013.25, "hPa"))
    assert convert_to_canonical("temperature", 20.0, "V") is None
    assert convert_to_canonical("my_custom_quantity", 3.0, "furlong") == (3.0, "furlong")


def test_normaliser_converts_tags_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    n = Normaliser(driver="x", source="src", source_tags={"zone": "north", "floor": "1"}, metrics=metrics)
    out = n.normalise([
        reading(quantity="active_power", value=2.0, unit="kW", tags={"floor": "2"}),
        reading(value=math.nan),
        reading(quality=Quality.BAD),
        reading(device="", value=7),
        reading(unit="V"),
        reading(unit="V"),
    ])  # fmt: skip
    assert out[0].value == 2000.0 and out[0].unit == "W"
    assert dict(out[0].tags) == {"zone": "north", "floor": "2"}
    assert [r.device for r in out] == ["d", "d", "src", "d", "d"]  # NaN dropped, empty device = source name
    assert out[3].unit == "V"  # kept, not silently dropped
    sample = metrics.registry.get_sample_value
    assert sample("gateway_readings_total", {"driver": "x", "device": "d", "outcome": "non_finite"}) == 1
    assert sample("gateway_readings_total", {"driver": "x", "device": "d", "outcome": "bad"}) == 1
    assert sample("gateway_readings_total", {"driver": "x", "device": "d", "outcome": "unit_mismatch"}) == 2
    assert sample("gateway_readings_total", {"driver": "x", "device": "src", "outcome": "ok"}) == 1
    # Logged once per problem, not once per reading.
    assert sum("cannot be converted" in r.message for r in caplog.records if r.levelno == logging.WARNING) == 1
