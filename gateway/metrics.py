"""Prometheus metrics: one family of names, one registry per daemon.

Every runtime problem is one call that counts (here) and logs (at the caller,
once per transition) with the same labels.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.buffer import BufferStats


class _BufferCollector(Collector):
    """Exposes the latest buffer stats snapshot (refreshed by the daemon's status loop).

    The buffer's SQLite connection belongs to its own thread, so the HTTP
    thread reads a snapshot instead of querying the database.
    """

    def __init__(self) -> None:
        self.stats: BufferStats | None = None

    def collect(self) -> Iterable[Metric]:
        stats = self.stats
        if stats is None:
            return
        now_ns = time.time_ns()
        yield GaugeMetricFamily("gateway_buffer_readings", "Readings in the durable buffer", value=stats.readings)
        yield GaugeMetricFamily("gateway_buffer_bytes", "Logical size of the buffered readings", value=stats.bytes)
        yield GaugeMetricFamily("gateway_buffer_file_bytes", "Size of the buffer files on disk", value=stats.file_bytes)
        age = (now_ns - stats.oldest_ts_ns) / 1e9 if stats.oldest_ts_ns is not None else 0.0
        yield GaugeMetricFamily(
            "gateway_buffer_oldest_age_seconds", "Age of the oldest buffered reading", value=max(age, 0.0)
        )
        dropped = GaugeMetricFamily(
            "gateway_buffer_dropped_readings", "Readings dropped by the overflow policy, ever", labels=["policy"]
        )
        dropped.add_metric(["drop_oldest"], stats.dropped_oldest_total)
        dropped.add_metric(["drop_newest"], stats.dropped_newest_total)
        yield dropped
        yield CounterMetricFamily(
            "gateway_buffer_disk_full_events",
            "Writes to the buffer that met a full disk since the daemon started (see docs/durability.md)",
            value=stats.disk_full_events,
        )
        pending = GaugeMetricFamily("gateway_sink_pending_readings", "Readings not yet sent, per sink", labels=["sink"])
        lag = GaugeMetricFamily(
            "gateway_sink_lag_seconds", "Age of the oldest reading a sink has not yet acknowledged", labels=["sink"]
        )
        dead = GaugeMetricFamily("gateway_sink_dead_letters", "Readings in the dead-letter table", labels=["sink"])
        for name, sink in stats.sinks.items():
            pending.add_metric([name], sink.pending)
            oldest = sink.oldest_pending_ts_ns
            lag.add_metric([name], max((now_ns - oldest) / 1e9, 0.0) if oldest is not None else 0.0)
            dead.add_metric([name], sink.dead_letters)
        yield pending
        yield lag
        yield dead


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.readings = Counter(
            "gateway_readings", "Readings by driver, device and outcome", ["driver", "device", "outcome"], registry=r
        )
        self.readings_refused = Counter(
            "gateway_readings_refused",
            "Readings refused before the buffer because no store can hold them, by reason",
            ["driver", "source", "reason"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "gateway_poll_duration_seconds",
            "Duration of one poll of a source",
            ["driver", "source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.missed_ticks = Counter(
            "gateway_poll_missed_ticks", "Poll ticks skipped because a poll overran", ["driver", "source"], registry=r
        )
        self.driver_restarts = Counter(
            "gateway_driver_restarts", "Driver restarts after a failure", ["driver", "source"], registry=r
        )
        self.driver_errors = Counter(
            "gateway_driver_errors", "Non-fatal driver errors by kind", ["driver", "source", "kind"], registry=r
        )
        self.device_up = Gauge(
            "gateway_device_up", "1 if the device answered its last poll", ["driver", "source", "device"], registry=r
        )
        self.sink_sent = Counter("gateway_sink_sent_readings", "Readings acknowledged by a sink", ["sink"], registry=r)
        self.sink_selected = Counter(
            "gateway_sink_selected_readings",
            "Readings a sink's routing rules selected (acked past; sent unless dead-lettered)",
            ["sink"],
            registry=r,
        )
        self.sink_filtered = Counter(
            "gateway_sink_filtered_readings",
            "Readings a sink's routing rules did not select (its cursor moved past them)",
            ["sink"],
            registry=r,
        )
        self.sink_failed = Counter(
            "gateway_sink_failed_batches", "Batches a sink did not accept, by outcome", ["sink", "outcome"], registry=r
        )
        self.sink_retried = Counter("gateway_sink_retries", "Batch send retries", ["sink"], registry=r)
        self.sink_dead_lettered = Counter(
            "gateway_sink_dead_lettered_readings", "Readings moved to the dead-letter table", ["sink"], registry=r
        )
        self.sink_dispatcher_restarts = Counter(
            "gateway_sink_dispatcher_restarts",
            "Restarts of a sink's dispatcher after a buffer error (take, ack, dead-lettering)",
            ["sink"],
            registry=r,
        )
        self.sink_up = Gauge("gateway_sink_up", "1 if the sink's last send succeeded", ["sink"], registry=r)
        self.sink_send_duration = Histogram(
            "gateway_sink_send_duration_seconds", "Duration of one batch send", ["sink"], registry=r
        )
        self.buffer_dropped = Counter(
            "gateway_buffer_dropped", "Readings dropped by the overflow policy (this process)", ["policy"], registry=r
        )
        self.buffer_pending_commit = Gauge(
            "gateway_buffer_pending_commit_readings",
            "Readings handed over by the sources and waiting in memory for the next buffer commit",
            registry=r,
        )
        self.buffer_commit_failed = Counter(
            "gateway_buffer_commit_failed_readings",
            "Readings given up after several failed buffer commits (lost; the log says why)",
            registry=r,
        )
        self.buffer_commit_duration = Histogram(
            "gateway_buffer_commit_duration_seconds", "Duration of one buffer append transaction", registry=r
        )
        self.config_reloads = Counter(
            "gateway_config_reloads", "Config reloads (SIGHUP) by outcome", ["outcome"], registry=r
        )
        self.info = Gauge("gateway_info", "Gateway identity", ["version", "site", "gateway"], registry=r)
        self.clock_synchronized = Gauge(
            "gateway_clock_synchronized", "1 if the kernel says the system clock is synchronised (NTP)", registry=r
        )
        # Fleet (gateway/fleet/, docs/fleet.md)
        self.duplicate_name = Gauge(
            "gateway_duplicate_name",
            "1 while another running gateway publishes a status under this gateway's name or identity",
            registry=r,
        )
        self.fleet_connected = Gauge(
            "gateway_fleet_connected", "1 while the fleet status connection to the broker is up", registry=r
        )
        self.fleet_status_published = Counter(
            "gateway_fleet_status_published", "Status documents published on the fleet topic", registry=r
        )
        self.fleet_takeovers = Counter(
            "gateway_fleet_takeovers",
            "Reconnects that found another process's status on this gateway's own topic (a box with its identity)",
            registry=r,
        )
        self.buffer_collector = _BufferCollector()
        r.register(self.buffer_collector)

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
