"""kill -9 at random moments: committed readings and frames are neither lost nor
corrupted, and replay after restart is in order."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.buffer import DurableBuffer

BATCH = 200
WIDTH = 10  # values per frame in the batches made of frames

# The writer: appends numbered batches forever (value == buffer id - 1, so a
# hole or a duplicate anywhere shows), even batches as frames of WIDTH values
# (one row each; ts_ns of the frame's first value), odd ones as readings;
# prints each batch number once its append has returned (committed), and acks
# like a real dispatcher: "fast" takes frames and acks everything, "slow" stays
# ~5 batches behind, so rows are deleted too.
WRITER = """
import sys
from pathlib import Path
from gateway.buffer import DurableBuffer
from gateway.frame import Frame, FrameFields
from gateway.model import Reading

path, batch_no, size, sync, width = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
fields = FrameFields.of(["sequence"] * width, ["count"] * width)
buf = DurableBuffer(path, sync=sync)
buf.set_sinks(["fast", "slow"])
while True:
    base = batch_no * size
    tags = {"batch": str(batch_no)}
    if batch_no % 2 == 0:
        batch = [
            Frame(base + i, "site", "gw", "dev", fields, tuple(range(base + i, base + i + width)), tags)
            for i in range(0, size, width)
        ]
    else:
        batch = [Reading(base + i, "site", "gw", "dev", "sequence", base + i, "count", tags) for i in range(size)]
    buf.append(batch)
    print(batch_no, flush=True)
    frames = buf.take_frames("fast", 10 * size)
    if frames:
        buf.ack("fast", frames[-1].last_id)
    if buf.stats().sinks["slow"].pending > 5 * size:
        buf.ack("slow", buf.take("slow", size)[-1].id)
    batch_no += 1
"""


def check_buffer(path: Path, last_reported: int) -> int:
    """Assert the buffer holds every committed batch intact and in order; return the next batch number."""
    with DurableBuffer(path) as buf:
        stats = buf.stats()
        last_value = -1
        for sink in ("fast", "slow"):
            acked = stats.sinks[sink].acked_id
            items = buf.take(sink, 10**7)
            ids = [item.id for item in items]
            assert ids == list(range(acked + 1, acked + 1 + len(items))), f"{sink}: hole or duplicate"
            for item in items:
                r, value = item.reading, item.id - 1
                batch_no = value // BATCH
                ts = value - value % WIDTH if batch_no % 2 == 0 else value  # a frame's values share its ts
                assert r.value == value and r.ts_ns == ts, f"{sink}: reading {item.id} corrupted"
                assert r.tags["batch"] == str(batch_no)
            last_value = max(last_value, ids[-1] - 1 if ids else acked - 1)
        assert stats.readings == stats.sinks["slow"].pending  # fast is ahead; all below slow's cursor is gone
    assert (last_value + 1) % BATCH == 0, "a batch was committed in part"
    committed_batches = (last_value + 1) // BATCH
    assert committed_batches >= last_reported + 1, "a batch reported as committed is missing"
    # a batch may be committed but not yet reported when the kill lands: at most one
    assert committed_batches <= last_reported + 2
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    return committed_batches


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_committed_batch(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    path = tmp_path / "buffer.db"
    next_batch = 0
    total_reported = 0
    for round_no in range(6):
        sync = ("full", "normal")[round_no % 2]
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(next_batch), str(BATCH), sync, str(WIDTH)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        try:
            first = proc.stdout.readline()  # running and committing
            assert first, f"writer died: rc={proc.poll()}"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        reported = [int(line) for line in (first + proc.stdout.read()).split()]
        proc.stdout.close()
        assert reported == list(range(next_batch, next_batch + len(reported))), f"seed {seed}"
        total_reported += len(reported)
        print(f"round {round_no} ({sync}): {len(reported)} batches reported")
        next_batch = check_buffer(path, reported[-1])
    assert total_reported >= 6
