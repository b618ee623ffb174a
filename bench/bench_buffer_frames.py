"""Cost per value of frames through the durable buffer: append + take_frames + ack.

Run: python bench/bench_buffer_frames.py [--values N] [--width 100]

Frames of ``--width`` float values (a wide Modbus poll: 100 devices, a few
tags on a third of them), appended ``--batch`` frames per transaction (one group
commit), then taken by one sink with ``take_frames`` and acked, interleaved as
the dispatcher does (served from the in-memory tail). Prints, per sync mode
and batch size, microseconds of process CPU and of wall clock per value, and
values per second. Then a backlog: everything appended first, then drained
(take_frames reads and decodes the rows from SQLite). A few seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.buffer import DurableBuffer, Sync
from gateway.frame import Frame, FrameFields


def make_frames(count: int, width: int) -> list[Frame]:
    fields = FrameFields.of([f"register_{i}" for i in range(width)], ["V" if i % 3 else "A" for i in range(width)])
    tags = [{"bus": f"rs485-{d % 4}", "room": f"R{d % 7}"} if d % 3 == 0 else {} for d in range(100)]
    t0 = 1_700_000_000_000_000_000
    return [
        Frame(
            t0 + (i // 100) * 1_000_000_000,
            "site-a",
            "gw-01",
            f"meter-{i % 100:03d}",
            fields,
            tuple((i + k) * 0.5 for k in range(width)),
            tags[i % 100],
        )
        for i in range(count)
    ]


def run(frames: list[Frame], sync: Sync, batch: int, take_limit: int, workdir: Path) -> tuple[float, float]:
    path = workdir / f"frames-{sync}-{batch}.db"
    values = sum(len(f) for f in frames)
    with DurableBuffer(path, sync=sync, max_bytes=10 * 1024**3) as buf:
        buf.set_sinks(["sink"])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        taken = 0
        for start in range(0, len(frames), batch):
            buf.append(frames[start : start + batch])
            while got := buf.take_frames("sink", take_limit):
                buf.ack("sink", got[-1].last_id)
                taken += sum(len(b.frame) for b in got)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        assert taken == values and buf.stats().readings == 0
    return cpu / values * 1e6, wall / values * 1e6


def drain(frames: list[Frame], take_limit: int, workdir: Path) -> tuple[float, float, float]:
    """CPU us per value of take_frames + ack of a backlog (read back from the file), and the
    file's and the logical size in MB per million values."""
    path = workdir / "backlog.db"
    values = sum(len(f) for f in frames)
    with DurableBuffer(path, sync="normal", max_bytes=10 * 1024**3, tail_max=0) as buf:
        buf.set_sinks(["sink"])
        for start in range(0, len(frames), 100):
            buf.append(frames[start : start + 100])
        buf._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stats = buf.stats()
        per_million = 1e6 / values / 1e6
        file_mb, logical_mb = stats.file_bytes * per_million, stats.bytes * per_million
        cpu0 = time.process_time()
        taken = 0
        while got := buf.take_frames("sink", take_limit):
            buf.ack("sink", got[-1].last_id)
            taken += sum(len(b.frame) for b in got)
        cpu = time.process_time() - cpu0
        assert taken == values
    return cpu / values * 1e6, file_mb, logical_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=300_000, help="values per run (default 300,000)")
    parser.add_argument("--width", type=int, default=100, help="values per frame (default 100)")
    parser.add_argument("--take", type=int, default=1000, help="take_frames limit in values (default 1000)")
    args = parser.parse_args()
    frames = make_frames(args.values // args.width, args.width)
    print(f"{len(frames):,} frames of {args.width} values; take_frames limit {args.take}")
    print(f"{'sync':<7}{'frames/append':>14}{'cpu us/value':>14}{'wall us/value':>15}{'values/s':>12}")
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        for sync in ("full", "normal"):
            for batch in (10, 100):
                cpu, wall = run(frames, sync, batch, args.take, Path(tmp))
                print(f"{sync:<7}{batch:>14}{cpu:>14.3f}{wall:>15.3f}{1e6 / wall:>12,.0f}")
        backlog, file_mb, logical_mb = drain(frames, args.take, Path(tmp))
        print(f"backlog drained from the file (take_frames + ack): {backlog:.3f} cpu us/value")
        print(f"file size per million buffered values: {file_mb:.1f} MB on disk, {logical_mb:.1f} MB logical")


if __name__ == "__main__":
    main()
