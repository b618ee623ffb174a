"""The daemon in-process: sources -> buffer -> local sink, failures, reload, status."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.metrics import Metrics
from gateway.sinks.local import LocalStore


def write_config(path: Path, state: Path, sources: str, sinks: str = '[[sinks]]\ntype = "local"\n') -> Path:
    path.write_text(
        f'[gateway]\nsite = "test-site"\nname = "gw"\nstate_dir = "{state}"\n'
        '[buffer]\nflush_interval = "50ms"\nsync = "normal"\n'
        "[metrics]\nenabled = false\n" + sources + sinks
    )
    return path


SEQUENCE = """
[[sources]]
driver = "simulated"
name = "{name}"
interval = "{interval}"
readings_per_poll = {per_poll}
fail_every = {fail_every}
devices = [{{ name = "{name}-dev", kind = "sequence" }}]
"""


def seq_source(name: str, interval: str = "50ms", per_poll: int = 5, fail_every: int = 0) -> str:
    return SEQUENCE.format(name=name, interval=interval, per_poll=per_poll, fail_every=fail_every)


def runs_in_store(path: Path) -> dict[tuple[str, str], list[int]]:
    store = LocalStore(path, readonly=True)
    try:
        runs: dict[tuple[str, str], list[int]] = defaultdict(list)
        for p in store.iter_all():
            runs[(p.reading.device, p.reading.tags["run"])].append(int(p.reading.value))  # type: ignore[arg-type]
        return runs
    finally:
        store.close()


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_readings_flow_to_the_local_store_without_gaps(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state", seq_source("a") + seq_source("b")))
    metrics = Metrics()
    daemon = Daemon(cfg, metrics=metrics, serve_metrics=False)
    task = asyncio.create_task(daemon.run())
    await wait_for(lambda: daemon.dispatchers and daemon.dispatchers["local"].sent_total >= 100)
    await wait_for(lambda: (tmp_path / "state" / "status.json").exists())
    live = json.loads((tmp_path / "state" / "status.json").read_text())
    assert set(live["sources"]) == {"a", "b"} and live["sinks"]["local"]["state"] == "ok"
    daemon.request_stop()
    await task
    runs = runs_in_store(tmp_path / "state" / "local.sqlite")
    assert {dev for dev, _ in runs} == {"a-dev", "b-dev"}
    for values in runs.values():
        assert sorted(values) == list(range(len(values)))  # contiguous from 0, no duplicates
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["site"] == "test-site"
    assert status["buffer"]["readings"] == 0  # everything delivered and acked at stop
    ok = metrics.registry.get_sample_value("gateway_readings_total", {"driver": "simulated", "device": "a-dev",
                                                                       "outcome": "ok"})  # fmt: skip
    assert ok == sum(len(v) for (d, _), v in runs.items() if d == "a-dev")  # exactly what was committed


async def test_a_failing_driver_is_restarted_and_does_not_stop_the_others(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state",
                                   seq_source("flaky", fail_every=3) + seq_source("steady")))  # fmt: skip
    metrics = Metrics()
    daemon = Daemon(cfg, metrics=metrics, serve_metrics=False)
    task = asyncio.create_task(daemon.run())
    await wait_for(lambda: "flaky" in daemon.supervisors)
    daemon.supervisors["flaky"].backoff.initial_s = 0.05
    daemon.supervisors["flaky"].backoff.cap_s = 0.1
    await wait_for(lambda: daemon.supervisors["flaky"].restarts >= 2)
    steady_before = daemon.supervisors["steady"].readings_total
    await wait_for(lambda: daemon.supervisors["steady"].readings_total > steady_before + 20)
    daemon.request_stop()
    await task
    restarts = metrics.registry.get_sample_value("gateway_driver_restarts_total",
                                                 {"driver": "simulated", "source": "flaky"})  # fmt: skip
    assert restarts is not None and restarts >= 2
    runs = runs_in_store(tmp_path / "state" / "local.sqlite")
    flaky_runs = [v for (dev, _), v in runs.items() if dev == "flaky-dev"]
    assert len(flaky_runs) >= 2  # one run per restart
    for values in flaky_runs:
        assert sorted(values) == list(range(len(values)))


def test_sighup_reload_applies_a_valid_config_and_keeps_the_old_one_when_invalid(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    state = tmp_path / "state"
    path = write_config(tmp_path / "gw.toml", state, seq_source("a"))
    cmd = [sys.executable, "-m", "gateway", "run", "-c", str(path)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)

    def status() -> dict[str, object]:
        try:
            return json.loads((state / "status.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def wait(predicate: object, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)

    try:
        wait(lambda: set(status().get("sources", {})) == {"a"})  # type: ignore[arg-type]
        write_config(path, state, seq_source("a") + seq_source("added"))
        proc.send_signal(signal.SIGHUP)
        wait(lambda: set(status().get("sources", {})) == {"a", "added"})  # type: ignore[arg-type]
        path.write_text(path.read_text().replace('driver = "simulated"', 'driver = "simulatd"', 1))
        proc.send_signal(signal.SIGHUP)
        wait(lambda: status().get("reloads") == {"ok": 1, "invalid": 1})  # the invalid reload was handled
        assert set(status()["sources"]) == {"a", "added"}  # type: ignore[arg-type]  # old config kept
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert "KEEPING THE OLD CONFIG RUNNING" in err and "sources[0].driver" in err
    runs = runs_in_store(state / "local.sqlite")
    assert {dev for dev, _ in runs} == {"a-dev", "added-dev"}
    for values in runs.values():  # nothing committed was lost across the reloads
        assert sorted(values) == list(range(len(values)))


async def test_an_unsynchronised_clock_is_reported_once_each_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.clock import clock_synchronized

    assert clock_synchronized() in (True, False)  # the kernel answers on Linux
    caplog.set_level("WARNING", logger="gateway.daemon")
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state", seq_source("a")))
    metrics = Metrics()
    daemon = Daemon(cfg, metrics=metrics, serve_metrics=False)
    clock = {"synced": False}
    daemon.clock_check = lambda: clock["synced"]
    task = asyncio.create_task(daemon.run())
    status = tmp_path / "state" / "status.json"
    await wait_for(lambda: status.exists() and json.loads(status.read_text())["clock_synchronized"] is False)
    for _ in range(2):  # two more status rounds (each checks the clock): still one warning
        before = json.loads(status.read_text())["updated_ns"]
        await wait_for(lambda before=before: json.loads(status.read_text())["updated_ns"] != before)
    assert metrics.registry.get_sample_value("gateway_clock_synchronized") == 0
    clock["synced"] = True
    await wait_for(lambda: json.loads(status.read_text())["clock_synchronized"] is True)
    daemon.request_stop()
    await task
    messages = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert len(messages) == 2 and "not synchronised" in messages[0] and "synchronised again" in messages[1]
    assert metrics.registry.get_sample_value("gateway_clock_synchronized") == 1


def test_gateway_run_freezes_what_start_up_made_and_collects_less_often() -> None:
    import gc

    from gateway.daemon import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 1000  # the modules' objects are out of every scan
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
