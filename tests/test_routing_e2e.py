"""Routing end to end: the daemon with real VictoriaMetrics (raw), Mosquitto (one device) and the local store."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.metrics import Metrics
from gateway.sinks.local import LocalStore
from tests.servers import Mosquitto, VictoriaMetrics
from tests.test_sink_mqtt import subscribed

SOURCES = """
[[sources]]
driver = "simulated"
name = "city-air"
interval = "50ms"
tags = { owner = "city" }
devices = [{ name = "aq-1", kind = "air" }]

[[sources]]
driver = "simulated"
name = "operator-energy"
interval = "50ms"
tags = { owner = "operator" }
devices = [{ name = "meter-1", kind = "energy" }]
"""


def config(tmp_path: Path, vm: VictoriaMetrics, mqtt: Mosquitto) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nsite = "e2e"\nname = "gw"\nstate_dir = "{tmp_path / "state"}"\n'
        '[buffer]\nflush_interval = "50ms"\nsync = "normal"\n[metrics]\nenabled = false\n[web]\nenabled = false\n'
        + SOURCES
        + f"""
[[sinks]]
type = "influxdb"
name = "city-store"
url = "{vm.url}"
org = "city"
bucket = "b"

[[sinks]]
type = "mqtt"
name = "operator"
host = "127.0.0.1"
port = {mqtt.port}
status_topic = ""
[[sinks.include]]
source = "operator-*"
[sinks.shape]
drop_tags = ["owner"]

[[sinks]]
type = "local"
name = "portal"
[[sinks.include]]
quantity = "pm*"
[sinks.shape]
drop_quantities = ["pm10"]
rename_tags = {{ owner = "publisher" }}
"""
    )
    return path


def vm_series(vm: VictoriaMetrics, expected: int, timeout: float = 15.0) -> list[dict[str, object]]:
    """The e2e series in VictoriaMetrics, once ``expected`` devices have shown up (ingestion is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        series = vm.export('{__name__=~".+_value",site="e2e"}')
        if len({s["metric"]["device"] for s in series}) >= expected or time.monotonic() > deadline:  # type: ignore[index]
            return series
        time.sleep(0.2)


async def wait_for(predicate: object, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_each_destination_stores_exactly_its_share(
    tmp_path: Path, victoria: VictoriaMetrics, mosquitto: Mosquitto
) -> None:
    cfg = load_config(config(tmp_path, victoria, mosquitto))
    metrics = Metrics()
    daemon = Daemon(cfg, metrics=metrics, serve_metrics=False, serve_web=False)
    async with subscribed(mosquitto.port, "#") as sub:
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: len(sub.messages) >= 40 and daemon.dispatchers["portal"].sent_total >= 10)
        dispatchers = dict(daemon.dispatchers)  # the daemon forgets them when it stops
        daemon.request_stop()
        await task
        # Stopping drains the buffer: every message the operator sink acknowledged is published.
        await sub.wait_for(daemon_sent := int(metrics.sink_sent.labels("operator")._value.get()))
    payloads = [json.loads(p) for _, p, _ in sub.messages]
    assert len(payloads) == daemon_sent
    assert {p["device"] for p in payloads} == {"meter-1"}
    assert all(p["tags"] == {} for p in payloads)  # owner dropped

    series = vm_series(victoria, expected=2)
    assert {s["metric"]["device"] for s in series} == {"aq-1", "meter-1"}  # type: ignore[index]
    assert {s["metric"]["owner"] for s in series} == {"city", "operator"}  # type: ignore[index]  # raw tags

    store = LocalStore(tmp_path / "state" / "local.sqlite", readonly=True)
    try:
        stored = [p.reading for p in store.iter_all()]
    finally:
        store.close()
    assert stored and {(r.device, r.quantity) for r in stored} == {("aq-1", "pm2_5")}
    assert all(dict(r.tags) == {"publisher": "city"} for r in stored)

    status = json.loads((tmp_path / "state" / "status.json").read_text())
    total = status["buffer"]["sinks"]["city-store"]["acked_id"]
    for name in ("city-store", "operator", "portal"):
        sink = dispatchers[name].status()  # what `gateway status` shows
        assert sink["selected"] + sink["filtered"] == total  # every sink's cursor went over every reading
    assert dispatchers["city-store"].filtered_total == 0
    assert dispatchers["portal"].selected_total == len(stored)
    assert metrics.sink_filtered.labels("operator")._value.get() == dispatchers["operator"].filtered_total > 0
