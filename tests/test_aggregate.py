"""Per-source aggregation over aligned windows (gateway/aggregate.py), and in the daemon."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from gateway.aggregate import AggregateConfig, WindowAggregator
from gateway.config import ConfigError, build_config, load_config
from gateway.daemon import Daemon
from gateway.metrics import Metrics
from gateway.model import Quality, Reading
from gateway.sinks.local import LocalStore
from tests.test_daemon import wait_for, write_config

S = 1_000_000_000
T0 = 1_700_000_040 * S  # a multiple of 60 s


def r(t_s: float, value: object, quantity: str = "pm2_5", unit: str = "ug/m3", **kw: object) -> Reading:
    base = Reading(ts_ns=T0 + int(t_s * S), site="s", gateway="g", device="sds", quantity=quantity,
                   value=value, unit=unit)  # type: ignore[arg-type]  # fmt: skip
    return base.with_changes(**kw) if kw else base


def by_stat(readings: list[Reading]) -> dict[str, object]:
    return {x.tags.get("stat", "mean"): x.value for x in readings}


def test_one_aggregate_per_stat_per_window_stamped_with_the_window_start() -> None:
    agg = WindowAggregator(AggregateConfig(window=60, stats=["mean", "min", "max", "last"]))
    agg.add([r(1, 10), r(20, 14), r(59.9, 12), r(61, 100)], now_ns=T0 + 62 * S)
    assert agg.due(T0 + 61 * S) == []  # the first window ends at 60 s; grace is 2 s
    out = agg.due(T0 + 62 * S)
    assert {x.ts_ns for x in out} == {T0}
    assert by_stat(out) == {"mean": 12.0, "min": 10, "max": 14, "last": 12}
    mean = next(x for x in out if "stat" not in x.tags)
    assert (mean.quantity, mean.unit, dict(mean.tags)) == ("pm2_5", "ug/m3", {})
    assert agg.due(T0 + 100 * S) == []  # nothing new: nothing sent twice
    second = agg.due(T0 + 122 * S)
    assert {x.ts_ns for x in second} == {T0 + 60 * S} and by_stat(second)["mean"] == 100.0


def test_series_are_kept_apart_and_tags_kept() -> None:
    agg = WindowAggregator(AggregateConfig(window=10))
    agg.add([r(1, 1.0), r(2, 3.0), r(1, 50, quantity="pm10"), r(1, 7, tags={"probe": "b"})], now_ns=T0)
    out = {(x.quantity, x.tags.get("probe")): x.value for x in agg.due(T0 + 12 * S)}
    assert out == {("pm2_5", None): 2.0, ("pm10", None): 50.0, ("pm2_5", "b"): 7.0}


def test_text_and_bool_series_keep_the_last_value_untagged() -> None:
    agg = WindowAggregator(AggregateConfig(window=10, stats=["mean", "max"]))
    agg.add([r(1, "ok", quantity="status", unit="/"), r(5, "fan fault", quantity="status", unit="/"),
             r(2, True, quantity="open", unit="/"), r(3, False, quantity="open", unit="/")], now_ns=T0)  # fmt: skip
    out = {x.quantity: (x.value, dict(x.tags)) for x in agg.due(T0 + 12 * S)}
    assert out == {"status": ("fan fault", {}), "open": (False, {})}


def test_bad_readings_are_left_out_unless_there_is_nothing_else() -> None:
    agg = WindowAggregator(AggregateConfig(window=10))
    bad, uncertain = Quality.BAD, Quality.UNCERTAIN
    agg.add([r(1, 999, quality=bad), r(2, 10), r(3, 20, quality=uncertain), r(4, -5, quality=bad)], now_ns=T0)
    agg.add([r(11, 999, quality=Quality.BAD), r(12, 997, quality=Quality.BAD)], now_ns=T0)
    out = sorted(agg.due(T0 + 22 * S), key=lambda x: x.ts_ns)
    assert [(x.value, x.quality) for x in out] == [(15.0, Quality.UNCERTAIN), (998.0, Quality.BAD)]


def test_a_late_reading_corrects_the_window_and_it_is_sent_again() -> None:
    agg = WindowAggregator(AggregateConfig(window=10))
    agg.add([r(1, 10), r(2, 20)], now_ns=T0 + 3 * S)
    assert by_stat(agg.due(T0 + 12 * S)) == {"mean": 15.0}
    agg.add([r(3, 60)], now_ns=T0 + 15 * S)  # late, within one more window: corrects it
    again = agg.due(T0 + 16 * S)
    assert [(x.ts_ns, x.value) for x in again] == [(T0, 30.0)]


def test_a_reading_after_its_window_was_forgotten_is_sent_not_dropped() -> None:
    agg = WindowAggregator(AggregateConfig(window=10))
    agg.add([r(1, 10)], now_ns=T0 + 2 * S)
    agg.due(T0 + 12 * S)
    agg.due(T0 + 30 * S)  # forgotten
    agg.add([r(4, 40)], now_ns=T0 + 30 * S)
    assert agg.reopened == 1
    assert [(x.ts_ns, x.value) for x in agg.due(T0 + 31 * S)] == [(T0, 40.0)]


def test_close_all_sends_open_windows_partial_and_nothing_twice() -> None:
    agg = WindowAggregator(AggregateConfig(window=60))
    agg.add([r(1, 1), r(61, 3), r(62, 5)], now_ns=T0 + 63 * S)
    assert by_stat(agg.due(T0 + 62 * S)) == {"mean": 1.0}
    assert agg.open_windows == 1
    assert [(x.ts_ns, x.value) for x in agg.close_all()] == [(T0 + 60 * S, 4.0)]
    assert agg.close_all() == []


def test_aggregate_config_errors_name_the_key_path(tmp_path: Path) -> None:
    source = {"driver": "simulated", "name": "air", "devices": [{"name": "x"}]}
    with pytest.raises(ConfigError) as err:
        build_config({"sources": [{**source, "aggregate": {"window": "0.5s"}}]}, env={})
    assert "sources[0].aggregate.window" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({"sources": [{**source, "aggregate": {"window": "60s", "stats": ["median"]}}]}, env={})
    assert "sources[0].aggregate.stats" in str(err.value)


async def test_an_aggregated_source_in_the_daemon_loses_nothing_up_to_the_stop(tmp_path: Path) -> None:
    source = """
[[sources]]
driver = "simulated"
name = "seq"
interval = "50ms"
devices = [{ name = "counter", kind = "sequence" }]
aggregate = { window = "1s", stats = ["mean", "min", "max"], grace = "0.2s" }
"""
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state", source))
    daemon = Daemon(cfg, metrics=Metrics(), serve_metrics=False)
    task = asyncio.create_task(daemon.run())
    await wait_for(lambda: daemon.dispatchers and daemon.dispatchers["local"].sent_total >= 9, timeout=30)
    supervisor = daemon.supervisors["seq"]
    daemon.request_stop()
    await task
    store = LocalStore(tmp_path / "state" / "local.sqlite", readonly=True)
    try:
        points = [p.reading for p in store.iter_all()]
    finally:
        store.close()
    assert all(p.ts_ns % S == 0 for p in points)  # stamped with their 1 s window's start
    windows: dict[int, dict[str, float]] = {}
    for p in points:
        windows.setdefault(p.ts_ns, {})[p.tags.get("stat", "mean")] = p.value  # type: ignore[assignment]
    assert len(points) == 3 * len(windows) < supervisor.readings_total
    # The sequence counts 0, 1, 2...: the windows' [min, max] ranges tile every count made,
    # including the open window sent at the stop, and each mean is the middle of its range.
    ranges = [(w["min"], w["max"]) for _, w in sorted(windows.items())]
    assert ranges[0][0] == 0 and ranges[-1][1] == supervisor.readings_total - 1
    assert all(nxt[0] == prev[1] + 1 for prev, nxt in itertools.pairwise(ranges))
    assert all(w["mean"] == (w["min"] + w["max"]) / 2 for w in windows.values())


async def test_an_aggregated_source_takes_frames_value_by_value(tmp_path: Path) -> None:
    from gateway.buffer import AsyncBuffer
    from gateway.frame import Frame, FrameFields
    from gateway.supervisor import SourceSupervisor
    from gateway.writer import BufferWriter

    source = """
[[sources]]
driver = "simulated"
name = "meter"
devices = [{ name = "m" }]
aggregate = { window = "60s", stats = ["mean", "max"] }
"""
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state", source))
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite")
    try:
        writer = BufferWriter(buffer, flush_interval_s=0.05, flush_max_readings=1000)
        sup = SourceSupervisor(cfg.sources[0], site="s", gateway="g", state_dir=str(tmp_path), writer=writer,
                               metrics=None)  # fmt: skip
        layout = FrameFields.of(["voltage", "current"], ["V", "A"])
        start = 1_700_000_040 * S  # a window start (60 s)
        for k, (v, a) in enumerate([(230.0, 4.0), (232.0, 6.0)]):
            await sup.emit([Frame(start + k * S, "s", "g", "m", layout, (v, a))], wait_commit=False)
        assert sup.readings_total == 4
        assert sup.aggregator is not None and sup.aggregator.open_windows == 2  # one per series
        got = {(r.quantity, r.tags.get("stat", "mean")): r.value for r in sup.aggregator.close_all()}
        assert got == {("voltage", "mean"): 231.0, ("voltage", "max"): 232.0,
                       ("current", "mean"): 5.0, ("current", "max"): 6.0}  # fmt: skip
    finally:
        await buffer.close()
