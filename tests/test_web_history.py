"""The status page's in-memory history (gateway/web/history.py): per-frame hot path, lazily resolved latest
values, float32 rings with their step semantics, and the memory bound."""

from __future__ import annotations

import math
import struct
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.frame import Frame, FrameFields
from gateway.model import Quality, Value, make_reading
from gateway.web.history import COMPACT_AT, MAX_RING_BYTES, Ring, SeriesHistory

T0 = 1_700_000_000 * 10**9
S = 10**9
LAYOUTS = {
    "A": FrameFields.of(["voltage", "current", "label"], ["V", "A", ""]),
    "B": FrameFields.of(["voltage", "power"], ["V", "W"]),
}


def _f32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _frame(device: str, fields: FrameFields, values: list[Value], ts_ns: int) -> Frame:
    return Frame(ts_ns, "s", "g", device, fields, values)


def _latest(history: SeriesHistory, source: str = "bus") -> dict[tuple[str, str], tuple[Value, str, int]]:
    return {(p.device, p.quantity): (p.value, p.unit, p.ts_ns) for p in history.latest_points(source)}


# --- the hot path: one entry per frame, not per value ---------------------------------------------------------


def test_the_observer_keeps_one_entry_per_device_and_layout_not_one_per_value() -> None:
    history = SeriesHistory()
    observe = history.observer("bus")
    wide = FrameFields.of([f"r{i}" for i in range(500)], ["V"] * 500)
    frames = [_frame(f"dev-{d}", wide, [float(s)] * 500, T0 + s * S) for s in range(3) for d in range(100)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for frame in frames:
        observe([frame])
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # 100 devices x 500 values: a per-series entry would cost far more than a pointer per value
    assert grown < 100 * 500 * 8 / 10
    assert history.entries("bus") == 100
    assert history.observed_total == 3 * 100 * 500
    history.sample()
    assert history.entries("bus") == 100
    assert _latest(history)[("dev-7", "r499")] == (2.0, "V", T0 + 2 * S)  # resolved when asked


# --- the latest values, resolved lazily, are what a per-value "newest wins" would keep -------------------------

_ITEM = st.one_of(
    st.tuples(st.just("frame"), st.sampled_from(["m1", "m2"]), st.sampled_from(sorted(LAYOUTS)),
              st.integers(0, 1000)),
    st.tuples(st.just("reading"), st.sampled_from(["m1", "m2"]), st.sampled_from(["voltage", "energy"]),
              st.integers(0, 1000)),
    st.tuples(st.just("sample"), st.just(""), st.just(""), st.just(0)),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_ITEM, max_size=40), gaps=st.lists(st.integers(1, 3 * S), min_size=40, max_size=40))
def test_latest_values_equal_a_per_value_newest_wins_model(
    ops: list[tuple[str, str, str, int]], gaps: list[int]
) -> None:
    history = SeriesHistory(step_s=1.0)
    observe = history.observer("bus")
    model: dict[tuple[str, str], tuple[Value, str, int]] = {}
    ts = T0
    for (kind, device, what, n), gap in zip(ops, gaps, strict=False):
        ts += gap
        if kind == "sample":
            history.sample()
        elif kind == "frame":
            fields = LAYOUTS[what]
            values: list[Value] = [float(n + i) if q != "label" else f"L{n}" for i, q in enumerate(fields.quantities)]
            observe([_frame(device, fields, values, ts)])
            for q, u, v in zip(fields.quantities, fields.units, values, strict=True):
                model[(device, q)] = (v, u, ts)
        else:
            observe([make_reading(ts, "s", "g", device, what, float(n), "kWh", {}, Quality.GOOD)])
            model[(device, what)] = (float(n), "kWh", ts)
        assert _latest(history) == model


def test_frames_of_one_poll_in_two_layouts_the_later_one_wins_as_it_arrived() -> None:
    """A Modbus poll: one timestamp, several frames (channels) whose layouts share quantities."""
    history = SeriesHistory()
    observe = history.observer("bus")
    for second in range(3):
        ts = T0 + second * S
        observe(
            [
                _frame("m", LAYOUTS["A"], [1.0 + second, 2.0, "x"], ts),
                _frame("m", LAYOUTS["B"], [3.0 + second, 4.0], ts),
            ]
        )
        latest = _latest(history)
        assert latest[("m", "voltage")] == (3.0 + second, "V", ts)  # B came later in the poll
        assert latest[("m", "current")] == (2.0, "A", ts)
        if second == 1:
            history.sample()
    assert history.entries("bus") == 2


def test_a_late_frame_of_another_layout_does_not_hide_the_newer_value_on_the_page_or_in_the_plot() -> None:
    history = SeriesHistory(step_s=1.0)
    observe = history.observer("bus")
    observe([_frame("m", LAYOUTS["A"], [230.0, 1.0, "x"], T0 + 2 * S)])
    observe([_frame("m", LAYOUTS["B"], [229.0, 5.0], T0 + 1 * S)])  # older, arrived later
    assert _latest(history)[("m", "voltage")] == (230.0, "V", T0 + 2 * S)
    assert _latest(history)[("m", "power")] == (5.0, "W", T0 + 1 * S)
    history.sample()
    assert _latest(history)[("m", "voltage")] == (230.0, "V", T0 + 2 * S)
    assert history.points(("bus", "m", "voltage"), T0, T0 + 3 * S)[-1] == (T0 + 2 * S, 230.0)


def test_the_page_value_is_exact_while_the_plot_keeps_float32() -> None:
    history = SeriesHistory(step_s=1.0)
    history.observer("bus")([_frame("m", LAYOUTS["B"], [230.1, 1e39], T0)])
    history.sample()
    assert _latest(history)[("m", "voltage")][0] == 230.1
    ((_, plotted),) = history.points(("bus", "m", "voltage"), T0, T0 + S)
    assert plotted == _f32(230.1) != 230.1 and math.isclose(plotted, 230.1, rel_tol=1e-7)
    assert history.points(("bus", "m", "power"), T0, T0 + S) == []  # beyond float32: no point, never "Infinity"


def test_frames_of_a_layout_no_series_needs_any_more_are_dropped() -> None:
    history = SeriesHistory(step_s=1.0)
    observe = history.observer("bus")
    for k in range(3 * COMPACT_AT):  # a device whose layout changes at every poll (a unit per frame)
        observe([_frame("m", FrameFields.of(["voltage"], [f"u{k}"]), [float(k)], T0 + k * S)])
        history.sample()
    assert history.entries("bus") < 2 * COMPACT_AT
    assert _latest(history) == {("m", "voltage"): (float(3 * COMPACT_AT - 1), f"u{3 * COMPACT_AT - 1}",
                                                   T0 + (3 * COMPACT_AT - 1) * S)}  # fmt: skip


# --- the rings: float32, the step implied by the slot ------------------------------------------------------------


def _steps(ring: Ring) -> list[tuple[int, float]]:
    return [(t // S, v) for t, v in ring.points(0, 10**6 * S)]


def test_a_ring_that_jumps_ahead_clears_the_steps_it_skipped() -> None:
    ring = Ring(1.0, 5)
    for step in range(10, 23):  # wraps around more than twice
        ring.put(step * S, float(step))
    assert _steps(ring) == [(18, 18.0), (19, 19.0), (20, 20.0), (21, 21.0), (22, 22.0)]
    ring.put(25 * S, 25.0)  # 23 and 24 skipped: their slots held 18 and 19, which must not come back
    assert _steps(ring) == [(21, 21.0), (22, 22.0), (25, 25.0)]
    ring.put(24 * S + 5, 24.0)  # late, but the ring still holds its step
    assert _steps(ring) == [(21, 21.0), (22, 22.0), (24, 24.0), (25, 25.0)]
    ring.put(40 * S, 40.0)  # further ahead than the ring is long
    assert _steps(ring) == [(40, 40.0)]


def test_a_late_reading_never_overwrites_a_newer_step() -> None:
    ring = Ring(1.0, 5)
    ring.put(40 * S, 40.0)
    ring.put(35 * S, 35.0)  # the slot of step 40: older than anything the ring holds, dropped
    ring.put(38 * S, 38.0)
    ring.put(40 * S + 1, 41.0)  # the same step again: the last value of the step wins
    assert _steps(ring) == [(38, 38.0), (40, 41.0)]
    assert ring.points(39 * S, 39 * S) == [] and ring.points(38 * S, 38 * S + 1) == [(38 * S, 38.0)]


@settings(max_examples=300, deadline=None)
@given(puts=st.lists(st.tuples(st.integers(0, 60), st.floats(-1e6, 1e6)), max_size=60))
def test_a_ring_holds_the_last_value_of_each_of_its_last_steps(puts: list[tuple[int, float]]) -> None:
    size = 7
    ring = Ring(1.0, size)
    model: dict[int, float] = {}
    newest = -1
    for step, value in puts:
        ring.put(step * S, value)
        newest = max(newest, step)
        if step > newest - size:
            model[step] = _f32(value)
        expected = sorted((s * S, v) for s, v in model.items() if s > newest - size)
        assert ring.points(0, 100 * S) == expected


# --- memory -----------------------------------------------------------------------------------------------------


def test_a_point_is_four_bytes_and_the_bound_keeps_over_700_series_in_3_mib() -> None:
    history = SeriesHistory(step_s=10.0)
    assert history.series_bytes == 4 * (361 + 720)
    assert MAX_RING_BYTES <= 3 * 1024**2 and MAX_RING_BYTES // history.series_bytes >= 720
    fields = FrameFields.of([f"r{i}" for i in range(50)], ["V"] * 50)
    observe = history.observer("bus")
    observe([_frame(f"dev-{d}", fields, [1.0] * 50, T0) for d in range(24)])  # 1,200 series
    history.sample()
    with_rings = [s for s in history.series() if s.hour is not None]
    assert len(with_rings) == MAX_RING_BYTES // history.series_bytes
    assert history.nbytes() == history.ring_bytes == len(with_rings) * history.series_bytes <= MAX_RING_BYTES
    assert history.series_without_rings == 1200 - len(with_rings)
