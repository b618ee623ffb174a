"""The buffer on a real small filesystem (a 2 MiB tmpfs): its disk figures are sized to it, it
recovers as soon as readings can be delivered, and it always opens, even on a full disk."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.buffer import DurableBuffer
from gateway.model import Reading

pytestmark = pytest.mark.slow


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for the test (CI runs as root) and unmounted after."""
    mountpoint = Path(tempfile.mkdtemp(prefix="smallfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
        mountpoint.rmdir()


def batch(start: int, n: int = 200) -> list[Reading]:
    return [Reading(ts_ns=1_700_000_000_000_000_000 + i, site="s", gateway="g", device="d", quantity="sequence",
                    value=i, unit="count") for i in range(start, start + n)]  # fmt: skip


def test_a_full_small_disk_recovers_as_soon_as_readings_can_be_delivered(small_fs: Path) -> None:
    junk = small_fs / "junk"
    junk.write_bytes(b"x" * 1024 * 1024)  # something else on the disk, deleted later
    with DurableBuffer(small_fs / "buffer.sqlite", sync="normal") as buf:
        reserve = Path(f"{buf.path}.reserve")
        assert 0 < reserve.stat().st_size <= 2 * 1024**2 // 16  # sized to the filesystem, and there
        buf.set_sinks(["down"])
        n = 0
        while not buf.append(batch(n)).dropped_oldest:  # the sink is down: fill the disk
            n += 200
            assert n < 100_000
        n += 200
        dropped = buf.stats().dropped_oldest_total
        junk.unlink()  # 1 MiB freed, and the sink comes back
        for _ in range(100):  # 20,000 readings, each batch delivered and acked
            result = buf.append(batch(n))
            n += 200
            assert result.accepted == 200, result
            got = buf.take("down", 100_000)
            buf.ack("down", got[-1].id, first_id=got[0].id)
        stats = buf.stats()
        assert stats.dropped_oldest_total == dropped and stats.dropped_newest_total == 0
        assert stats.readings == 0
        wal = Path(f"{buf.path}-wal")
        assert wal.stat().st_size <= 2 * 1024**2 // 8  # the WAL did not refill the freed space
        assert reserve.exists()  # taken again


_FILL_AND_DIE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from gateway.buffer import DurableBuffer
    from gateway.model import Reading
    buf = DurableBuffer(Path(sys.argv[1]), sync="normal")
    buf.set_sinks(["a"])
    for n in range(0, 80_000, 200):
        buf.append([Reading(ts_ns=1_700_000_000_000_000_000 + i, site="s", gateway="g", device="d",
                            quantity="sequence", value=i, unit="count") for i in range(n, n + 200)])
    os._exit(0)  # as kill -9: no close, no checkpoint
    """
)


def test_the_buffer_opens_and_drains_on_a_full_disk(small_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = small_fs / "buffer.sqlite"
    subprocess.run([sys.executable, "-c", _FILL_AND_DIE, str(path)], check=True, timeout=300)
    assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize < 2 * 1024**2 // 16  # full
    with caplog.at_level(logging.WARNING, logger="gateway.buffer"), DurableBuffer(path, sync="normal") as buf:
        messages = [r.getMessage() for r in caplog.records]
        assert any("more than its filesystem holds" in m for m in messages)
        assert any("no room for the" in m and "disk reserve" in m for m in messages)
        backlog = buf.stats().readings
        assert backlog > 10_000
        assert buf.set_sinks(["a", "b"]) == []  # a new sink: a write on a full disk (was: exit 1)
        for sink in ("a", "b"):  # both sinks drain the backlog: that frees the space
            got = buf.take(sink, 100_000)
            buf.ack(sink, got[-1].id, first_id=got[0].id)
        assert buf.stats().readings == 0
        assert buf.append(batch(10**6)).accepted == 200
    with DurableBuffer(path, sync="normal") as again:  # the drained state was committed
        assert again.stats().readings == 200
        assert set(again.stats().sinks) == {"a", "b"}


_FILL_WITH_FRAMES_AND_DIE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from gateway.buffer import DurableBuffer
    from gateway.frame import Frame, FrameFields
    buf = DurableBuffer(Path(sys.argv[1]), sync="normal")
    buf.set_sinks(["a"])
    fields = FrameFields.of([f"r{i}" for i in range(50)], ["count"] * 50)
    for n in range(0, 400_000, 1000):
        buf.append([Frame(1_700_000_000_000_000_000 + i, "s", "g", "d", fields, tuple(range(i, i + 50)))
                    for i in range(n, n + 1000, 50)])
    os._exit(0)  # as kill -9: no close, no checkpoint
    """
)


def test_frames_fill_a_full_disk_and_drain_whole_rows(small_fs: Path) -> None:
    path = small_fs / "buffer.sqlite"
    subprocess.run([sys.executable, "-c", _FILL_WITH_FRAMES_AND_DIE, str(path)], check=True, timeout=300)
    assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize < 2 * 1024**2 // 16  # full
    with DurableBuffer(path, sync="normal") as buf:
        stats = buf.stats()
        backlog = stats.readings
        assert backlog > 50_000 and stats.dropped_oldest_total > 0
        assert buf.set_sinks(["a", "b"]) == []
        got = buf.take_frames("a", 10**6)
        first = got[0].id
        assert sum(len(b.frame) for b in got) == backlog
        for b in got:  # whole frames, intact
            start = b.frame.ts_ns - 1_700_000_000_000_000_000
            assert b.frame.values == tuple(range(start, start + 50)) and b.id == start + 1
        buf.ack("a", got[-1].last_id)
        middle = first + backlog // 2 + 17  # inside a frame
        buf.ack("b", middle)
        stats = buf.stats()
        assert stats.sinks["b"].pending == first + backlog - 1 - middle
        assert 0 < stats.readings - stats.sinks["b"].pending < 50  # the acked front of one frame stays
        assert [b.id for b in buf.take("b", 2)] == [middle + 1, middle + 2]
        buf.ack("b", got[-1].last_id)
        assert buf.stats().readings == 0
    with DurableBuffer(path, sync="normal") as again:
        assert again.stats().readings == 0
