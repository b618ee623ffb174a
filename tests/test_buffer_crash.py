"""kill -9 at random moments: committed readings are neither lost nor corrupted,
and replay after restart is in order."""

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

# The writer: appends numbered batches forever (value == buffer id - 1, so a
# hole or a duplicate anywhere shows), prints each batch number once its
# append has returned (committed), and acks like a real dispatcher: "fast"
# acks everything, "slow" stays ~5 batches behind, so rows are deleted too.
WRITER = """
import sys
from pathlib import Path
from gateway.buffer import DurableBuffer
from gateway.model import Reading

path, batch_no, size, sync = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
buf = DurableBuffer(path, sync=sync)
buf.set_sinks(["fast", "slow"])
while True:
    base = batch_no * size
    buf.append([
        Reading(base + i, "site", "gw", "dev", "sequence", base + i, "count", {"batch": str(batch_no)})
        for i in range(size)
    ])
    print(batch_no, flush=True)
    items = buf.take("fast", 10 * size)
    if items:
        buf.ack("fast", items[-1].id)
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
                r = item.reading
                assert r.value == item.id - 1 and r.ts_ns == item.id - 1, f"{sink}: reading {item.id} corrupted"
                assert r.tags["batch"] == str((item.id - 1) // BATCH)
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
            [sys.executable, "-c", WRITER, str(path), str(next_batch), str(BATCH), sync],
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
