"""End to end with a real daemon process: kill -9 while streaming, server outages.

Every reading the daemon committed must end up in VictoriaMetrics, with no gap
and no duplicate in the stored series.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.buffer import DurableBuffer
from tests.servers import Mosquitto, VictoriaMetrics

pytestmark = pytest.mark.slow


def daemon_config(tmp_path: Path, sinks: str) -> Path:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nsite = "e2e"\nname = "gw"\nstate_dir = "{tmp_path / "state"}"\n'
        '[buffer]\nflush_interval = "50ms"\n[metrics]\nenabled = false\n'
        '[[sources]]\ndriver = "simulated"\nname = "stream"\ninterval = "20ms"\nreadings_per_poll = 20\n'
        'devices = [{ name = "counter", kind = "sequence" }]\n' + sinks
    )
    return cfg


def influx_sink(vm: VictoriaMetrics) -> str:
    return f'[[sinks]]\ntype = "influxdb"\nurl = "{vm.url}"\norg = "city"\nbucket = "b"\nbatch_size = 2000\n'


def start(cfg: Path) -> subprocess.Popen[bytes]:
    log = (cfg.parent / "daemon.log").open("ab")  # every run's stderr, shown if a stop fails
    try:
        return subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(cfg)], stderr=log)
    finally:
        log.close()


def starts_logged(cfg: Path) -> int:
    return (cfg.parent / "daemon.log").read_text(errors="replace").count(" running: ")


def wait_running(cfg: Path, starts: int, timeout: float = 60) -> None:
    """Wait until the daemon has logged its ``starts``-th start-up (its signal handlers are in place)."""
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = (cfg.parent / "daemon.log").read_text(errors="replace")
        if log.count(" running: ") >= starts:
            return
        time.sleep(0.05)
    raise AssertionError(f"the daemon did not start; its log ends:\n{log[-3000:]}")


def stop(proc: subprocess.Popen[bytes], cfg: Path) -> None:
    """SIGTERM, and expect a clean exit within 30 s."""
    proc.terminate()
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = None
    log = (cfg.parent / "daemon.log").read_text(errors="replace")
    assert code == 0, f"the daemon did not stop cleanly (exit {code}); its log ends:\n{log[-3000:]}"


def committed_in_buffer(path: Path) -> set[tuple[str, int]]:
    buffer = DurableBuffer(path, read_only=True)
    try:
        seen = set()
        for sink in buffer.stats().sinks:
            for item in buffer.take(sink, 10_000_000):
                seen.add((item.reading.tags["run"], int(item.reading.value)))  # type: ignore[arg-type]
        return seen
    finally:
        buffer.close()


def vm_runs(vm: VictoriaMetrics) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = defaultdict(list)
    for series in vm.export('{__name__="sequence_value"}'):
        runs[series["metric"]["run"]].extend(int(v) for v in series["values"])  # type: ignore[index,union-attr]
    return runs


def wait_drained(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buffer = DurableBuffer(path, read_only=True)
        try:
            stats = buffer.stats()
        finally:
            buffer.close()
        if stats.sinks and all(s.pending == 0 for s in stats.sinks.values()):
            return
        time.sleep(0.2)
    raise AssertionError("the buffer did not drain")


def assert_complete(runs: dict[str, list[int]], committed: set[tuple[str, int]]) -> None:
    for run, values in runs.items():
        assert len(values) == len(set(values)), f"duplicates in run {run}"
        assert sorted(values) == list(range(len(values))), f"gap in run {run}"
    stored = {(run, v) for run, values in runs.items() for v in values}
    assert committed <= stored, f"{len(committed - stored)} committed readings never reached the store"


def test_sigkill_while_streaming_loses_nothing_committed(tmp_path: Path) -> None:
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    try:
        cfg = daemon_config(tmp_path, influx_sink(vm))
        buffer_path = tmp_path / "state" / "buffer.sqlite"
        committed: set[tuple[str, int]] = set()
        rng = random.Random(7)
        for _ in range(4):
            proc = start(cfg)
            time.sleep(rng.uniform(2.5, 4.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            committed |= committed_in_buffer(buffer_path)
        starts = starts_logged(cfg)
        proc = start(cfg)
        wait_running(cfg, starts + 1)
        wait_drained(buffer_path)
        stop(proc, cfg)
        committed |= committed_in_buffer(buffer_path)
        runs = vm_runs(vm)
        # One run per daemon start that got to commit something (a start slowed down by a loaded
        # machine may be killed before its first commit).
        assert 2 <= len(runs) <= 5
        assert_complete(runs, committed)
    finally:
        vm.close()


def test_victoria_metrics_down_under_load_then_back_loses_nothing(tmp_path: Path) -> None:
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    try:
        cfg = daemon_config(tmp_path, influx_sink(vm))
        proc = start(cfg)
        wait_running(cfg, 1)
        time.sleep(1)
        down_ms = time.time_ns() // 1_000_000
        vm.stop()
        time.sleep(4)  # the daemon keeps reading and buffering
        up_ms = time.time_ns() // 1_000_000
        vm.start()
        time.sleep(1)
        stop(proc, cfg)
        buffer_path = tmp_path / "state" / "buffer.sqlite"
        pending = committed_in_buffer(buffer_path)
        proc = start(cfg)  # a restart replays what the first run could not deliver
        wait_running(cfg, 2)
        wait_drained(buffer_path)
        stop(proc, cfg)
        runs = vm_runs(vm)
        assert 1 <= len(runs) <= 2  # the second start may make readings of its own before it is stopped
        assert_complete(runs, pending)
        # Readings made while VictoriaMetrics was down reached it afterwards, in one contiguous run.
        stamps = [ts for series in vm.export('{__name__="sequence_value"}') for ts in series["timestamps"]]  # type: ignore[union-attr]
        made_while_down = [ts for ts in stamps if down_ms + 500 <= ts <= up_ms - 500]
        assert len(made_while_down) >= 100, f"{len(made_while_down)} readings from the outage window"
    finally:
        vm.close()


def test_broker_restart_loses_nothing(tmp_path: Path) -> None:
    import asyncio
    import json

    import aiomqtt

    broker = Mosquitto(tmp_path / "mq")
    broker.start()
    try:
        sinks = (f'[[sinks]]\ntype = "mqtt"\nhost = "127.0.0.1"\nport = {broker.port}\n'
                 'topic = "{site}/{gateway}/{device}/{quantity}"\n')  # fmt: skip
        cfg = daemon_config(tmp_path, sinks)
        from gateway.config import ConfigError, load_config

        try:
            load_config(cfg)
        except ConfigError as exc:  # adapt to the sink's key names
            pytest.fail(f"mqtt sink config: {exc}")
        received: list[tuple[str, int]] = []

        async def collect(stop_after: float) -> None:
            deadline = time.monotonic() + stop_after
            while time.monotonic() < deadline:
                try:
                    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="e2e-reader",
                                              clean_session=False) as client:  # fmt: skip
                        await client.subscribe("e2e/gw/counter/sequence", qos=1)
                        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                            async for msg in client.messages:
                                body = json.loads(msg.payload)  # type: ignore[arg-type]
                                received.append((body["tags"]["run"], int(body["value"])))
                except (aiomqtt.MqttError, TimeoutError):
                    await asyncio.sleep(0.2)

        async def scenario() -> None:
            reader = asyncio.create_task(collect(20))
            await asyncio.sleep(0.5)
            proc = start(cfg)
            await asyncio.to_thread(wait_running, cfg, 1)
            await asyncio.sleep(1.5)
            broker.restart()  # persistent sessions survive: mosquitto persistence is on
            await asyncio.sleep(3)
            await asyncio.to_thread(stop, proc, cfg)
            await reader

        asyncio.run(scenario())
        committed = committed_in_buffer(tmp_path / "state" / "buffer.sqlite")
        assert not committed, "everything was delivered before the clean stop"
        runs: dict[str, set[int]] = defaultdict(set)
        for run, value in received:
            runs[run].add(value)
        assert len(runs) == 1
        values = next(iter(runs.values()))
        assert sorted(values) == list(range(len(values)))  # no gap across the broker restart
        assert len(values) > 100
    finally:
        broker.close()
