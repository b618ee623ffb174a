"""The Prometheus exposition: buffer gauges from the stats snapshot, served on loopback."""

from __future__ import annotations

import socket
import time
import urllib.request

from gateway.buffer_types import BufferStats, SinkStats
from gateway.metrics import Metrics


def snapshot() -> BufferStats:
    now = time.time_ns()
    return BufferStats(
        readings=1200,
        bytes=48_000,
        file_bytes=65_536,
        oldest_ts_ns=now - 90 * 10**9,
        dropped_oldest_total=7,
        dropped_newest_total=0,
        dead_letters_total=3,
        sinks={
            "influxdb": SinkStats(
                "influxdb", acked_id=10, pending=1200, oldest_pending_ts_ns=now - 90 * 10**9, dead_letters=3
            ),
            "local": SinkStats("local", acked_id=1210, pending=0, oldest_pending_ts_ns=None, dead_letters=0),
        },
        disk_full_events=2,
    )


def test_buffer_and_sink_gauges_follow_the_snapshot() -> None:
    m = Metrics()
    value = m.registry.get_sample_value
    assert value("gateway_buffer_readings") is None  # nothing before the first snapshot
    m.buffer_collector.stats = snapshot()
    assert value("gateway_buffer_readings") == 1200
    assert value("gateway_buffer_bytes") == 48_000
    assert value("gateway_buffer_file_bytes") == 65_536
    assert 89 <= value("gateway_buffer_oldest_age_seconds") <= 120  # type: ignore[operator]
    assert value("gateway_buffer_dropped_readings", {"policy": "drop_oldest"}) == 7
    assert value("gateway_buffer_disk_full_events_total") == 2
    assert value("gateway_sink_pending_readings", {"sink": "influxdb"}) == 1200
    assert value("gateway_sink_pending_readings", {"sink": "local"}) == 0
    assert value("gateway_sink_lag_seconds", {"sink": "local"}) == 0
    assert value("gateway_sink_lag_seconds", {"sink": "influxdb"}) >= 89  # type: ignore[operator]
    assert value("gateway_sink_dead_letters", {"sink": "influxdb"}) == 3


def test_endpoint_serves_the_registry_on_loopback() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = Metrics()
    m.buffer_collector.stats = snapshot()
    m.sink_sent.labels("local").inc(5)
    m.serve(f"127.0.0.1:{port}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert "gateway_buffer_readings 1200.0" in body
    assert 'gateway_sink_sent_readings_total{sink="local"} 5.0' in body


def test_every_exposed_metric_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    m = Metrics()
    m.buffer_collector.stats = snapshot()
    names = [family.name for family in m.registry.collect()]
    assert len(names) >= 20
    missing = [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"add these to docs/metrics.md: {missing}"


def test_device_up_gauge_follows_transitions_though_the_hook_hears_only_of_them() -> None:
    import logging

    from gateway.driver import DriverContext

    metrics = Metrics()
    calls: list[bool] = []

    def hook(driver: str, source: str, device: str, up: bool) -> None:
        calls.append(up)
        metrics.device_up.labels(driver, source, device).set(1 if up else 0)

    ctx = DriverContext(site="s", gateway="g", source="bus", driver="modbus", logger=logging.getLogger("t"))
    ctx.device_up_hook = hook

    def gauge() -> float | None:
        return metrics.registry.get_sample_value(
            "gateway_device_up", {"driver": "modbus", "source": "bus", "device": "m1"}
        )

    for _ in range(3):
        ctx.device_up("m1")
    assert gauge() == 1 and calls == [True]  # every poll says up; the gauge is set once
    ctx.device_down("m1", "timeout")
    ctx.device_down("m1", "timeout")
    assert gauge() == 0 and calls == [True, False]
    ctx.device_up("m1")
    ctx.device_up("m1")
    assert gauge() == 1 and calls == [True, False, True]


def test_readings_counted_per_device_and_outcome_across_commits() -> None:
    from gateway.normalise import Normaliser

    metrics = Metrics()
    normaliser = Normaliser(driver="modbus", source="bus", source_tags={}, metrics=metrics)
    normaliser.count({("m1", "ok"): 40, ("m2", "ok"): 5})
    normaliser.count({("m1", "ok"): 60, ("m1", "out_of_range"): 2})

    def counted(device: str, outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            "gateway_readings_total", {"driver": "modbus", "device": device, "outcome": outcome}
        )

    assert (counted("m1", "ok"), counted("m2", "ok"), counted("m1", "out_of_range")) == (100, 5, 2)
