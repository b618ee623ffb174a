"""sd_notify against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sdnotify import Notifier


class Listener:
    """The systemd end: a bound datagram socket we read the notifications from."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def recv(self) -> bytes:
        return self.sock.recv(4096)

    def pending(self) -> list[bytes]:
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return out


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn") as d:
        yield Path(d)


@pytest.fixture
def listener(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    path = sock_dir / "notify"
    lst = Listener(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield lst
    lst.sock.close()


def test_ready_sends_exact_datagrams(listener: Listener) -> None:
    n = Notifier()
    assert n.enabled
    assert n.ready()
    assert listener.recv() == b"READY=1"
    assert n.ready("3 sources, 2 sinks")
    assert listener.recv() == b"READY=1\nSTATUS=3 sources, 2 sinks"
    n.close()


def test_stopping_watchdog_status_extend(listener: Listener) -> None:
    n = Notifier()
    assert n.stopping()
    assert n.watchdog()
    assert n.status("buffer: 12 readings\nsink influx: retry")
    assert n.status("")
    assert n.stopping("flushing")
    assert n.extend_timeout(2.5)
    assert [listener.recv() for _ in range(6)] == [
        b"STOPPING=1",
        b"WATCHDOG=1",
        b"STATUS=buffer: 12 readings sink influx: retry",  # newline would start a new assignment
        b"STATUS=",
        b"STOPPING=1\nSTATUS=flushing",
        b"EXTEND_TIMEOUT_USEC=2500000",
    ]


def test_reloading_carries_monotonic_usec(listener: Listener) -> None:
    n = Notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = listener.recv().split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"gateway-test-{uuid.uuid4().hex}"
    lst = Listener("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = Notifier()
        assert n.ready("up")
        assert lst.recv() == b"READY=1\nSTATUS=up"
    finally:
        lst.sock.close()


def test_environ_argument_overrides_process_env(listener: Listener, sock_dir: Path) -> None:
    other = Listener(str(sock_dir / "other"))
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": str(sock_dir / "other")})
        assert n.watchdog()
        assert other.recv() == b"WATCHDOG=1"
        assert listener.pending() == []
    finally:
        other.sock.close()


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not n.ready("x")
    assert not n.reloading()
    assert not n.stopping()
    assert not n.watchdog()
    assert not n.status("x")


def test_unsupported_address_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        n = Notifier(environ={"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert not n.ready()
    assert "not a supported address" in caplog.text


def test_send_failure_logged_once_then_recovery(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "late"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    n = Notifier()
    with caplog.at_level(logging.INFO, logger="gateway.sdnotify"):
        assert not n.ready()  # nobody listening yet: no exception
        assert not n.watchdog()
        assert not n.watchdog()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert str(path) in warnings[0].getMessage()

        lst = Listener(str(path))
        try:
            assert n.watchdog()
            assert n.watchdog()
            assert [lst.recv(), lst.recv()] == [b"WATCHDOG=1", b"WATCHDOG=1"]
        finally:
            lst.sock.close()
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in infos] == ["notifying systemd works again"]


def test_full_receiver_queue_never_blocks(listener: Listener, caplog: pytest.LogCaptureFixture) -> None:
    # systemd not reading: the kernel queue fills and a blocking send would hang
    # the event loop. The notifier must drop, return False and log once.
    n = Notifier()
    with caplog.at_level(logging.WARNING, logger="gateway.sdnotify"):
        results = [n.watchdog() for _ in range(5000)]
    assert results[0] is True
    assert False in results
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    drained = listener.pending()
    assert drained and set(drained) == {b"WATCHDOG=1"}
    assert n.watchdog()  # queue drained: works again


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(environ=env).watchdog_interval_s() == expected


def test_watchdog_interval_reads_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval_s() == 5.0
