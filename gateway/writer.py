"""Group commit into the durable buffer.

Drivers call ``emit``; their readings wait (at most ``flush_interval``, or until
``flush_max_readings`` are queued) and are committed together in one SQLite
transaction. ``emit`` returns only after that commit, so a driver can
acknowledge its own source (an MQTT message, a modem frame) knowing the
readings survive a kill -9. One fsync per flush instead of one per poll is
what keeps the buffer fast on an SD card.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from gateway.aio import wait_event
from gateway.buffer import AsyncBuffer
from gateway.metrics import Metrics
from gateway.model import Reading

log = logging.getLogger("gateway.writer")


class BufferWriter:
    def __init__(
        self,
        buffer: AsyncBuffer,
        *,
        flush_interval_s: float,
        flush_max_readings: int,
        metrics: Metrics | None = None,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.buffer = buffer
        self.flush_interval_s = flush_interval_s
        self.flush_max_readings = flush_max_readings
        self.metrics = metrics
        self.on_commit = on_commit
        self._pending: list[tuple[Sequence[Reading], asyncio.Future[None]]] = []
        self._pending_count = 0
        self._wake = asyncio.Event()
        self._closed = False
        self.committed_total = 0
        self._warned_drop = False

    async def emit(self, readings: Sequence[Reading]) -> None:
        """Queue readings and return once they are committed (raises if the commit failed)."""
        if not readings:
            return
        if self._closed:
            raise RuntimeError("the buffer writer is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((readings, future))
        self._pending_count += len(readings)
        if self._pending_count >= self.flush_max_readings:
            self._wake.set()
        await future

    async def run(self) -> None:
        """Flush loop; on cancellation, flushes what is queued before returning."""
        try:
            while True:
                await wait_event(self._wake, self.flush_interval_s)
                self._wake.clear()
                try:
                    await self.flush()
                except Exception:  # keep committing whatever comes next
                    log.exception("buffer flush failed")
        finally:
            self._closed = True
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_count = self._pending, [], 0
        batch = [r for readings, _ in pending for r in readings]
        started = time.perf_counter()
        try:
            result = await self.buffer.append(batch)
        except Exception as exc:  # keep the daemon alive; emitters see the error and retry
            log.exception("cannot commit %d readings to the buffer", len(batch))
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(BufferCommitError(str(exc)))
            return
        if self.metrics is not None:
            self.metrics.buffer_commit_duration.observe(time.perf_counter() - started)
            if result.dropped_newest:
                self.metrics.buffer_dropped.labels("drop_newest").inc(result.dropped_newest)
            if result.dropped_oldest:
                self.metrics.buffer_dropped.labels("drop_oldest").inc(result.dropped_oldest)
        if (result.dropped_newest or result.dropped_oldest) and not self._warned_drop:
            self._warned_drop = True
            log.error(
                "the buffer is full: dropped %d newest and %d oldest readings (overflow policy); "
                "check the sinks (gateway status) or raise buffer.max_bytes",
                result.dropped_newest,
                result.dropped_oldest,
            )
        elif not (result.dropped_newest or result.dropped_oldest) and self._warned_drop:
            self._warned_drop = False
            log.warning("the buffer accepts readings again without dropping")
        self.committed_total += result.accepted
        for _, fut in pending:
            if not fut.done():
                fut.set_result(None)
        try:
            self.on_commit()
        except Exception:  # a wake-up hook must never stop the writer
            log.exception("on_commit hook failed")


class BufferCommitError(RuntimeError):
    """The buffer could not commit; the readings were not accepted."""
