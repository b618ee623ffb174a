"""Per-sink downsampling with a real daemon process killed with SIGKILL: every window arrives whole."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from gateway.sinks.local import LocalStore
from tests.test_e2e_faults import start, starts_logged, stop, wait_running

pytestmark = pytest.mark.slow

S = 1_000_000_000


def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nsite = "e2e"\nname = "gw"\nstate_dir = "{tmp_path / "state"}"\n'
        '[buffer]\nflush_interval = "50ms"\n[metrics]\nenabled = false\n[web]\nenabled = false\n'
        '[[sources]]\ndriver = "simulated"\nname = "stream"\ninterval = "20ms"\nreadings_per_poll = 5\n'
        'devices = [{ name = "counter", kind = "sequence" }]\n'
        f'[[sinks]]\ntype = "local"\nname = "raw"\npath = "{tmp_path / "raw.sqlite"}"\n'
        f'[[sinks]]\ntype = "local"\nname = "portal"\npath = "{tmp_path / "portal.sqlite"}"\n'
        '[sinks.downsample]\nwindow = "1s"\nstats = ["count", "mean"]\ngrace = "0s"\n'
    )
    return cfg


def points(path: Path) -> list[tuple[str, str, int, float]]:
    """(run, stat, ts_ns, value) of every stored point."""
    store = LocalStore(path, readonly=True)
    try:
        return [(p.reading.tags["run"], p.reading.tags.get("stat", "mean"), p.reading.ts_ns,
                 float(p.reading.value)) for p in store.iter_all()]  # type: ignore[arg-type]  # fmt: skip
    finally:
        store.close()


def test_sigkill_at_any_moment_loses_no_window(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    rng = random.Random(11)
    for _ in range(3):
        proc = start(cfg)
        time.sleep(rng.uniform(1.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    starts = starts_logged(cfg)
    proc = start(cfg)
    wait_running(cfg, starts + 1)
    time.sleep(3.0)  # the windows of the killed runs close; this run's too, but for the last second
    stopped_ns = time.time_ns()
    stop(proc, cfg)

    raw: dict[tuple[str, int], list[float]] = defaultdict(list)
    for run, _, ts, value in points(tmp_path / "raw.sqlite"):
        raw[(run, ts - ts % S)].append(value)
    portal = {(run, stat, ts): value for run, stat, ts, value in points(tmp_path / "portal.sqlite")}
    assert len({run for run, _ in raw}) >= 3  # the killed runs committed readings
    counts = Counter(stat for _, stat, _ in portal)
    assert counts["count"] == counts["mean"] > 0
    for (run, window), values in raw.items():
        if window + 2 * S > stopped_ns:
            continue  # still open (or just closed) at the stop: its raw readings wait in the buffer
        assert portal.get((run, "count", window)) == len(values), f"window {window} of run {run} is not whole"
        assert portal[(run, "mean", window)] == pytest.approx(sum(values) / len(values))
    # Nothing sent but whole windows: a window in the portal has every raw reading the raw sink got.
    for (run, stat, window), value in portal.items():
        if stat == "count":
            assert value == len(raw[(run, window)])
