"""The normaliser on frames: the same outcome for every value as its Reading gets, counted in values.

The oracle is the per-reading path (``Normaliser.prepare`` on ``frame.readings()``): for any frame, the
frame path must keep the same values (as readings), count the same outcomes, drops and refusals, and warn
the same way; plus mixed input (order kept) and the history of the status page fed with frames.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.frame import Frame, FrameFields, as_readings
from gateway.metrics import Metrics
from gateway.model import Quality, Reading, make_reading
from gateway.normalise import Normaliser
from gateway.tags import EMPTY_TAGS
from gateway.web.history import SeriesHistory

NOW_NS = 1_700_000_000_000_000_000

# (quantity, unit): canonical, a convertible alias, an unconvertible unit, a custom quantity, bad names
LAYOUT = st.sampled_from([
    ("temperature", "Cel"), ("active_power", "kW"), ("active_power", "W"), ("pressure", "Pa"),
    ("temperature", "V"), ("my_custom", "furlong"), ("status", ""), ("bad\\nname", "Cel"), ("", ""),
    ("voltage", "V\\t"),
])  # fmt: skip
VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.sampled_from(["on", ""]),
    st.sampled_from([1e308, -1e308, 0.0]),  # finite values whose sum overflows
)
TS = st.sampled_from([NOW_NS, NOW_NS - 10**12, -1, 2**63, NOW_NS + 48 * 3600 * 10**9])
TAGS = st.sampled_from([EMPTY_TAGS, {"phase": "L1"}, {"ch": "bad\\x00"}, {"": "x"}])
DEVICE = st.sampled_from(["meter", "", "bad\\ndevice"])
QUALITY = st.sampled_from(list(Quality))


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    n = draw(st.integers(1, 8))
    layout = [draw(LAYOUT) for _ in range(n)]
    qualities = tuple(draw(QUALITY) for _ in range(n)) if draw(st.booleans()) else None
    return Frame(
        draw(TS), "site", draw(st.sampled_from(["gw", "gw\\n"])), draw(DEVICE),
        FrameFields.of([q for q, _ in layout], [u for _, u in layout]),
        tuple(draw(VALUE) for _ in range(n)), draw(TAGS), qualities,
    )  # fmt: skip


def _normaliser() -> tuple[Normaliser, Metrics]:
    metrics = Metrics()
    return Normaliser(driver="modbus", source="bus", source_tags={"zone": "z"}, metrics=metrics), metrics


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        if family.name in ("gateway_readings", "gateway_readings_refused")
        for s in family.samples
        if s.name.endswith("_total")
    }


def _key(r: Reading) -> tuple[Any, ...]:
    value = r.value
    exact = struct.pack(">d", value) if type(value) is float else value
    return (r.ts_ns, r.site, r.gateway, r.device, r.quantity, type(value).__name__, exact, r.unit,
            tuple(sorted(r.tags.items())), r.quality)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(batch=st.lists(frames(), min_size=1, max_size=4))
def test_frames_normalise_as_their_readings_do(batch: list[Frame]) -> None:
    by_frame, frame_metrics = _normaliser()
    by_reading, reading_metrics = _normaliser()
    out, outcomes = by_frame.prepare_at(batch, NOW_NS)
    expected, expected_outcomes = by_reading.prepare_at(as_readings(batch), NOW_NS)
    assert all(type(item) is Frame for item in out)
    assert [_key(r) for r in as_readings(out)] == [_key(r) for r in as_readings(expected)]
    assert outcomes == expected_outcomes
    by_frame.count(outcomes)
    by_reading.count(expected_outcomes)
    assert _samples(frame_metrics) == _samples(reading_metrics)  # drops, refusals, outcomes: in values
    assert by_frame._warned == by_reading._warned  # the same problems are logged (once each)


def _frame(values: tuple[Any, ...], units: tuple[str, ...] | None = None, **kw: Any) -> Frame:
    quantities = ("voltage", "current", "active_power")[: len(values)]
    units = units or ("V", "A", "W")[: len(values)]
    args: dict[str, Any] = {"ts_ns": NOW_NS, "site": "s", "gateway": "g", "device": "m", "tags": EMPTY_TAGS} | kw
    return Frame(fields=FrameFields.of(quantities, units), values=values, **args)


def test_a_frame_that_loses_values_is_a_selection_and_its_values_are_counted() -> None:
    n, metrics = _normaliser()
    out, outcomes = n.prepare_at([_frame((230.0, math.nan, 2.0), ("V", "A", "kW"))], NOW_NS)
    (frame,) = out
    assert isinstance(frame, Frame)
    assert frame.fields.quantities == ("voltage", "active_power")
    assert frame.values == (230.0, 2000.0) and frame.fields.units == ("V", "W")  # kW -> W per position
    assert dict(frame.tags) == {"zone": "z"}
    assert outcomes == {("m", "ok"): 2}
    sample = metrics.registry.get_sample_value
    assert sample("gateway_readings_total", {"driver": "modbus", "device": "m", "outcome": "non_finite"}) == 1


def test_a_frame_dated_in_the_future_is_refused_value_by_value() -> None:
    n, metrics = _normaliser()
    out, outcomes = n.prepare_at([_frame((1.0, 2.0, 3.0), ts_ns=NOW_NS + 48 * 3600 * 10**9)], NOW_NS)
    assert out == [] and outcomes == {}
    labels = {"driver": "modbus", "source": "bus", "reason": "timestamp_in_future"}
    assert metrics.registry.get_sample_value("gateway_readings_refused_total", labels) == 3


def test_an_unchanged_frame_is_passed_on_as_is() -> None:
    n = Normaliser(driver="modbus", source="bus", source_tags={}, metrics=None)
    frame = _frame((230.0, 5.0, 1150.0), qualities=(Quality.GOOD, Quality.BAD, Quality.UNCERTAIN))
    out, outcomes = n.prepare_at([frame], NOW_NS)
    assert out[0] is frame
    assert outcomes == {("m", "ok"): 1, ("m", "bad"): 1, ("m", "uncertain"): 1}


def test_a_frame_that_holds_the_source_tags_already_is_passed_on_as_is() -> None:
    from types import MappingProxyType

    n, _ = _normaliser()  # source tags {"zone": "z"}, which the Modbus driver merges into its frames itself
    frame = _frame((230.0, 5.0), tags=MappingProxyType({"zone": "z", "phase": "L1"}))
    out, _ = n.prepare_at([frame], NOW_NS)
    assert out[0] is frame
    other = _frame((230.0, 5.0), tags=MappingProxyType({"phase": "L1"}))
    (merged,) = n.prepare_at([other], NOW_NS)[0]
    assert dict(merged.tags) == {"zone": "z", "phase": "L1"}


def test_mixed_readings_and_frames_keep_their_order() -> None:
    n, _ = _normaliser()
    first = make_reading(NOW_NS, "s", "g", "serial", "temperature", 21.5, "Cel", EMPTY_TAGS, Quality.GOOD)
    last = make_reading(NOW_NS, "s", "g", "lora", "pressure", 101300.0, "Pa", EMPTY_TAGS, Quality.GOOD)
    out, outcomes = n.prepare_at([first, _frame((230.0, 5.0)), last], NOW_NS)
    assert [type(i).__name__ for i in out] == ["Reading", "Frame", "Reading"]
    assert [(r.device, r.quantity, r.value, r.unit) for r in as_readings(out)] == [
        ("serial", "temperature", 21.5, "Cel"), ("m", "voltage", 230.0, "V"), ("m", "current", 5.0, "A"),
        ("lora", "pressure", 1013.0, "hPa"),
    ]  # fmt: skip
    assert outcomes == {("serial", "ok"): 1, ("m", "ok"): 2, ("lora", "ok"): 1}


def test_the_status_page_history_takes_frames_without_expanding_them() -> None:
    history = SeriesHistory(step_s=10.0)
    observe = history.observer("bus")
    reading = make_reading(NOW_NS, "s", "g", "m", "voltage", 229.0, "V", EMPTY_TAGS, Quality.GOOD)
    frame = _frame((230.0, 5.0, 1150.0), qualities=(Quality.GOOD, Quality.BAD, Quality.GOOD))
    observe([reading, frame])
    assert history.observed_total == 4
    expected = {
        "voltage": (230.0, "V", Quality.GOOD), "current": (5.0, "A", Quality.BAD),
        "active_power": (1150.0, "W", Quality.GOOD),
    }  # fmt: skip
    latest = {r.quantity: r for _, r in history.latest("bus")}
    assert {q: (r.value, r.unit, r.quality) for q, r in latest.items()} == expected
    assert {p.quantity: (p.value, p.unit, p.quality) for p in history.latest_points("bus")} == expected  # the page
    history.sample()
    assert history.points(("bus", "m", "current"), NOW_NS - 10**10, NOW_NS + 10**10) == [(NOW_NS, 5.0)]
    observe([_frame((231.0,), ts_ns=NOW_NS + 10**10)])  # a newer frame with only one of the series
    history.sample()
    assert [v for _, v in history.points(("bus", "m", "voltage"), NOW_NS - 10**10, NOW_NS + 2 * 10**10)] == [
        230.0, 231.0,
    ]  # fmt: skip


def test_make_frame_builds_what_the_constructor_builds() -> None:
    from gateway.frame import make_frame

    layout = FrameFields.of(["voltage", "current"], ["V", "A"])
    args = (NOW_NS, "s", "g", "m", layout, (230.0, 5.0), {"phase": "L1"}, (Quality.GOOD, Quality.BAD))
    made = make_frame(*args)
    assert made == Frame(*args)
    assert [getattr(made, name) for name in Frame.__slots__] == list(args)
