"""The group-commit writer: at once when idle, grouped under load, bounded when not waited for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.buffer import AsyncBuffer
from gateway.buffer_types import AppendResult
from gateway.frame import Frame, FrameFields
from gateway.metrics import Metrics
from gateway.model import Reading
from gateway.writer import NOWAIT_ATTEMPTS, BufferWriter


def readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading(ts_ns=1_700_000_000_000_000_000 + i, site="s", gateway="g", device="d", quantity="sequence",
                    value=i, unit="count") for i in range(start, start + n)]  # fmt: skip


@pytest.fixture
async def buffer(tmp_path: Path) -> AsyncIterator[AsyncBuffer]:
    buf = await AsyncBuffer.open(tmp_path / "buffer.sqlite", max_bytes=10**9, overflow="drop_oldest", sync="full")
    await buf.set_sinks(["probe"])
    yield buf
    await buf.close()


@contextlib.asynccontextmanager
async def running(writer: BufferWriter) -> AsyncIterator[None]:
    task = asyncio.create_task(writer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_idle_writer_commits_at_once(buffer: AsyncBuffer) -> None:
    # A 60 s commit interval: an emit that waited for it would time out below.
    writer = BufferWriter(buffer, flush_interval_s=60, flush_max_readings=10_000)
    async with running(writer):
        for i in range(3):
            async with asyncio.timeout(10):
                await writer.emit(readings(1, start=i))
    assert len(await buffer.take("probe", 100)) == 3


async def test_concurrent_emits_share_commits(buffer: AsyncBuffer) -> None:
    commits = 0

    def count() -> None:
        nonlocal commits
        commits += 1

    writer = BufferWriter(buffer, flush_interval_s=60, flush_max_readings=10_000, on_commit=count)
    async with running(writer):
        async with asyncio.timeout(10):
            await asyncio.gather(*(writer.emit(readings(1, start=i)) for i in range(200)))
    assert len(await buffer.take("probe", 1000)) == 200
    # the first emit is committed alone (idle); the other 199 arrived during that commit and go together
    assert commits <= 3


async def test_nowait_emits_are_bounded_and_committed_at_stop(buffer: AsyncBuffer) -> None:
    writer = BufferWriter(buffer, flush_interval_s=60, flush_max_readings=10_000, max_pending=10)
    await writer.emit(readings(10), wait_commit=False)  # the writer is not running yet: queued
    assert writer.pending == 10
    blocked = asyncio.create_task(writer.emit(readings(5, start=10), wait_commit=False))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "an 11th reading over max_pending=10 must wait for room"
    async with running(writer):
        async with asyncio.timeout(10):
            await blocked
    # the writer was stopped: whatever was queued has been committed
    assert writer.pending == 0
    assert [item.reading.value for item in await buffer.take("probe", 100)] == list(range(15))


class FailingBuffer:
    """An AsyncBuffer whose first ``failures`` appends raise, as a buffer on a broken disk would."""

    def __init__(self, inner: AsyncBuffer, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def append(self, batch: list[Reading]) -> AppendResult:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("disk I/O error")
        return await self.inner.append(batch)


async def test_nowait_readings_survive_a_failed_commit(buffer: AsyncBuffer) -> None:
    writer = BufferWriter(FailingBuffer(buffer, failures=1), flush_interval_s=0.01, flush_max_readings=10_000)  # type: ignore[arg-type]
    async with running(writer):
        await writer.emit(readings(4), wait_commit=False)
        async with asyncio.timeout(10):
            while writer.committed_total < 4:
                await asyncio.sleep(0.01)
    assert [item.reading.value for item in await buffer.take("probe", 100)] == [0, 1, 2, 3]
    assert writer.commit_failed_total == 0


async def test_nowait_readings_are_given_up_and_counted_after_repeated_failures(buffer: AsyncBuffer) -> None:
    metrics = Metrics()
    failing = FailingBuffer(buffer, failures=NOWAIT_ATTEMPTS)
    writer = BufferWriter(failing, flush_interval_s=0.01, flush_max_readings=10_000, metrics=metrics)  # type: ignore[arg-type]
    async with running(writer):
        await writer.emit(readings(4), wait_commit=False)
        async with asyncio.timeout(10):
            while failing.failures > 0 or writer.pending:
                await asyncio.sleep(0.01)
        await writer.emit(readings(1, start=4))  # the buffer works again
    assert writer.commit_failed_total == 4
    assert metrics.registry.get_sample_value("gateway_buffer_commit_failed_readings_total") == 4
    assert [item.reading.value for item in await buffer.take("probe", 100)] == [4]


def frame(n: int, start: int = 0) -> Frame:
    layout = FrameFields.of(["sequence"] * n, ["count"] * n)
    return Frame(1_700_000_000_000_000_000 + start, "s", "g", "d", layout, tuple(range(start, start + n)))


async def test_frames_count_as_their_values_in_the_queue_bound_and_when_committed(buffer: AsyncBuffer) -> None:
    writer = BufferWriter(buffer, flush_interval_s=60, flush_max_readings=10_000, max_pending=10)
    committed: list[int] = []
    await writer.emit([frame(10)], wait_commit=False, on_committed=lambda: committed.append(10))
    assert writer.pending == 10  # one frame, ten values
    blocked = asyncio.create_task(
        writer.emit([frame(5, start=10)], wait_commit=False, on_committed=lambda: committed.append(5))
    )
    await asyncio.sleep(0)  # the emit runs up to its wait for room
    assert writer.pending == 10, "a frame over max_pending=10 values must wait for room, not be queued"
    async with running(writer):
        async with asyncio.timeout(10):
            await blocked
    assert writer.pending == 0 and writer.committed_total == 15
    assert committed == [10, 5]
    assert [item.reading.value for item in await buffer.take("probe", 100)] == list(range(15))
