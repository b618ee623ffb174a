"""The clock check: cheap (no fork per call) and honest under the unit's ProtectClock seccomp filter."""

from __future__ import annotations

import asyncio
import ctypes.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import clock
from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.metrics import Metrics
from tests.test_daemon import seq_source, wait_for, write_config


def test_the_check_does_not_look_up_libc_on_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # find_library runs `ldconfig -p` in a child process on Python 3.11: once a second is 86,400 forks a day.
    lookups: list[str] = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: lookups.append(name))
    answers = {clock.clock_synchronized() for _ in range(5)}
    assert lookups == []
    assert answers <= {True, False}  # the kernel answers outside a sandbox


# What ProtectClock=yes does on systemd 252: a seccomp filter that makes the @clock
# syscalls (adjtimex, clock_adjtime among them) fail with EPERM, read-only calls included.
_UNDER_PROTECT_CLOCK = textwrap.dedent(
    """
    import ctypes, sys
    from pathlib import Path
    seccomp = ctypes.CDLL("libseccomp.so.2")
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = seccomp.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    for name in (b"adjtimex", b"clock_adjtime"):
        nr = seccomp.seccomp_syscall_resolve_name(name)
        assert seccomp.seccomp_rule_add(ctx, 0x00050000 | 1, nr, 0) == 0  # SCMP_ACT_ERRNO(EPERM)
    assert seccomp.seccomp_load(ctx) == 0
    from gateway.clock import ClockCheck
    check = ClockCheck(timesync_marker=Path(sys.argv[1]))
    print(check(), check.source)
    """
)


def test_under_protect_clock_the_check_asks_timesyncd_or_says_unknown(tmp_path: Path) -> None:
    marker = tmp_path / "synchronized"

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", _UNDER_PROTECT_CLOCK, str(marker)],
                              capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        return done.stdout.strip()

    assert run() == "None unknown"
    marker.touch()  # systemd-timesyncd creates it when it has synchronised the clock
    assert run() == "True timesyncd"


async def test_an_unknown_clock_shows_as_unknown_in_status_and_metric(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state", seq_source("a")))
    metrics = Metrics()
    daemon = Daemon(cfg, metrics=metrics, serve_metrics=False)
    daemon.clock_check = lambda: None
    task = asyncio.create_task(daemon.run())
    status = tmp_path / "state" / "status.json"
    await wait_for(lambda: status.exists() and json.loads(status.read_text())["clock_synchronized"] == "unknown")
    assert metrics.registry.get_sample_value("gateway_clock_synchronized") == -1
    daemon.request_stop()
    await task
