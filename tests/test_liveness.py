"""The systemd watchdog is fed only while data moves: a dead dispatcher or a writer that cannot
commit stops the pings; a sink that is down with its readings safely buffered does not."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.buffer import AsyncBuffer
from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.metrics import Metrics
from gateway.sdnotify import Notifier
from tests.test_daemon import seq_source, wait_for

DOWN_SINK = (
    '[[sinks]]\ntype = "influxdb"\nurl = "http://127.0.0.1:9"\norg = "o"\nbucket = "b"\n'
    'token_env = "LIVENESS_TEST_TOKEN"\n'
)


class Systemd:
    """The service manager's end of NOTIFY_SOCKET: collects the datagrams."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.received: list[bytes] = []

    def watchdog_pings(self) -> int:
        try:
            while True:
                self.received.append(self.sock.recv(4096))
        except BlockingIOError:
            pass
        return sum(b"WATCHDOG=1" in d for d in self.received)


@pytest.fixture
def systemd() -> Iterator[tuple[Systemd, Notifier]]:
    with tempfile.TemporaryDirectory(prefix="wd") as d:  # AF_UNIX paths are short
        path = os.path.join(d, "notify")
        manager = Systemd(path)
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
        yield manager, Notifier(environ=env)
        manager.sock.close()


def config(tmp_path: Path, sinks: str = '[[sinks]]\ntype = "local"\n', stall: str = "1s") -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        f'[gateway]\nsite = "s"\nname = "gw"\nstate_dir = "{tmp_path / "state"}"\nstall_timeout = "{stall}"\n'
        '[buffer]\nflush_interval = "50ms"\nsync = "normal"\n[metrics]\nenabled = false\n' + seq_source("a") + sinks
    )
    return path


def status(tmp_path: Path) -> dict[str, object]:
    try:
        return json.loads((tmp_path / "state" / "status.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


async def status_rounds(tmp_path: Path, rounds: int) -> None:
    """Wait until the daemon has written its status ``rounds`` more times."""
    for _ in range(rounds):
        before = status(tmp_path).get("updated_ns")
        await wait_for(lambda before=before: status(tmp_path).get("updated_ns") != before)


async def test_a_dead_dispatcher_stops_the_watchdog_pings(tmp_path: Path, systemd: tuple[Systemd, Notifier]) -> None:
    manager, notifier = systemd
    daemon = Daemon(load_config(config(tmp_path)), metrics=Metrics(), notifier=notifier, serve_metrics=False)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: manager.watchdog_pings() >= 1 and daemon.dispatchers["local"].sent_total > 0)
        daemon._sink_tasks["local"].cancel()  # the dispatcher task is gone, as if it had died
        await wait_for(lambda: "dispatcher of sink local has stopped" in str(status(tmp_path).get("stalled")))
        pings = manager.watchdog_pings()
        await status_rounds(tmp_path, 2)
        assert manager.watchdog_pings() == pings
    finally:
        daemon.request_stop()
        await task


async def test_a_writer_that_cannot_commit_stops_the_pings_after_the_stall_timeout(
    tmp_path: Path, systemd: tuple[Systemd, Notifier]
) -> None:
    manager, notifier = systemd
    daemon = Daemon(load_config(config(tmp_path)), metrics=Metrics(), notifier=notifier, serve_metrics=False)
    task = asyncio.create_task(daemon.run())
    broken: AsyncBuffer | None = None
    try:
        await wait_for(lambda: manager.watchdog_pings() >= 1 and daemon.dispatchers["local"].sent_total > 0)
        assert daemon.writer is not None and daemon.buffer is not None
        # From now on every commit fails (a read-only connection to the same file), while the source produces.
        broken = await AsyncBuffer.open(daemon.buffer.path, read_only=True)
        daemon.writer.buffer = broken
        await wait_for(lambda: "no reading could be committed" in str(status(tmp_path).get("stalled")))
        pings = manager.watchdog_pings()
        await status_rounds(tmp_path, 2)
        assert manager.watchdog_pings() == pings
    finally:
        daemon.request_stop()
        await task
        if broken is not None:
            await broken.close()


async def test_a_sink_that_is_down_with_readings_buffered_is_not_stuck(
    tmp_path: Path, systemd: tuple[Systemd, Notifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVENESS_TEST_TOKEN", "t")
    manager, notifier = systemd
    daemon = Daemon(load_config(config(tmp_path, DOWN_SINK)), metrics=Metrics(), notifier=notifier,
                    serve_metrics=False)  # fmt: skip
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: daemon.dispatchers and daemon.dispatchers["influxdb"].failing is not None)
        # Well past the 1 s stall timeout, the sink still down: the watchdog is still fed.
        loop = asyncio.get_running_loop()
        down_at = loop.time()
        await status_rounds(tmp_path, 3)
        assert loop.time() - down_at > 1.0
        pings = manager.watchdog_pings()
        await wait_for(lambda: manager.watchdog_pings() > pings)
        assert status(tmp_path)["stalled"] is None
        assert status(tmp_path)["buffer"]["sinks"]["influxdb"]["pending"] > 0  # type: ignore[index]
    finally:
        daemon.request_stop()
        await task


def test_a_dispatcher_failing_on_a_full_disk_is_not_stuck_but_other_buffer_failures_are(tmp_path: Path) -> None:
    from gateway.buffer import BufferFullError, DurableBufferError
    from gateway.dispatch import SinkDispatcher
    from gateway.liveness import Liveness
    from gateway.sink import SendResult
    from tests.test_dispatch import ScriptedSink

    live = Liveness(stall_after_s=0.0)
    d = SinkDispatcher(ScriptedSink("a", lambda v, c: SendResult.ok()), None)  # type: ignore[arg-type]
    d._broke(BufferFullError(tmp_path, "disk full: 3 dead letters not stored"))
    assert d.status()["state"] == "failing"
    assert live.stuck(writer_task=None, sink_tasks={}, dispatchers={"a": d}) is None  # a restart frees no space
    d._broke(DurableBufferError(tmp_path, "ack failed: disk I/O error"))
    assert "dispatcher of sink a has failed" in str(live.stuck(writer_task=None, sink_tasks={}, dispatchers={"a": d}))
