"""Group commit into the durable buffer, adaptive to the load.

Sources hand readings over with ``emit``; everything handed over between two
commits goes into the next commit, one SQLite transaction (and one fsync with
``sync = "full"``) for all of them.

When to commit: a quiet writer commits at once, so a reading waits only for
its own commit (light-load latency of a few milliseconds). Under load it
waits, before the next commit, ``MIN_GAP_S`` plus ``GAP_FACTOR`` times as
long as its last commit took (at most ``flush_interval``), or until
``flush_max_readings`` are queued: the fixed cost of a commit (the fsync, the
transaction, a take, a send and an ack for every sink) then stays a small
share of the time, which keeps the throughput.

Two ways to hand readings over:
- ``emit(readings)`` returns once they are committed (or raises
  ``BufferCommitError``), so a driver may acknowledge its source (an MQTT
  message, a modem frame) knowing they survive a kill -9;
- ``emit(readings, wait_commit=False)`` returns once they are queued, so a
  polled source (a Modbus bus, a polled driver) is never paced by the commit
  cadence. It waits only when ``max_pending`` readings are already queued
  (back-pressure, so memory stays bounded). Queued readings are committed at
  stop; if a commit fails they are tried again with the next one, and after
  ``NOWAIT_ATTEMPTS`` failed commits they are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.aio import wait_event
from gateway.buffer import AsyncBuffer
from gateway.frame import Item, count_values
from gateway.metrics import Metrics

log = logging.getLogger("gateway.writer")

GAP_FACTOR = 4.0  # under load a commit's fixed cost stays under 1/(1 + GAP_FACTOR) of the time
MIN_GAP_S = 0.025  # a commit also costs every sink a take, a send and an ack: at most ~40 commits/s
NOWAIT_ATTEMPTS = 3  # commits a queued (not awaited) reading takes part in before it is given up


@dataclass(slots=True)
class _Handover:
    readings: Sequence[Item]
    future: asyncio.Future[None] | None  # None: the emitter did not wait for the commit
    on_committed: Callable[[], None] | None = None
    attempts: int = 0
    count: int = 0  # values (a frame counts each of its values)

    def __post_init__(self) -> None:
        self.count = count_values(self.readings)


class BufferWriter:
    def __init__(
        self,
        buffer: AsyncBuffer,
        *,
        flush_interval_s: float,
        flush_max_readings: int,
        max_pending: int | None = None,
        metrics: Metrics | None = None,
        on_commit: Callable[[], None] = lambda: None,
        on_commit_failed: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.buffer = buffer
        self.flush_interval_s = flush_interval_s
        self.flush_max_readings = flush_max_readings
        # Room for a few commits' worth: more than that waiting means the buffer cannot keep up.
        self.max_pending = max_pending if max_pending is not None else max(4 * flush_max_readings, 10_000)
        self.metrics = metrics
        self.on_commit = on_commit
        self.on_commit_failed = on_commit_failed
        self._pending: list[_Handover] = []
        self._pending_count = 0
        self._wake = asyncio.Event()  # something was handed over
        self._full = asyncio.Event()  # flush_max_readings are waiting
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._last_commit_s = 0.0  # duration of the last commit
        self._last_commit_end = 0.0  # monotonic time it ended
        self._failing = False
        self.committed_total = 0
        self.commit_failed_total = 0
        self._warned_drop = False

    @property
    def pending(self) -> int:
        """Readings handed over and not yet committed."""
        return self._pending_count

    async def emit(
        self,
        readings: Sequence[Item],
        *,
        wait_commit: bool = True,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        """Hand readings over; return once committed, or once queued with ``wait_commit=False``.

        ``on_committed`` is called once they are committed (counting them then, not when queued)."""
        if not readings:
            return
        if self._closed:
            raise RuntimeError("the buffer writer is closed")
        if not wait_commit:
            while self._pending_count >= self.max_pending and not self._closed:
                self._room.clear()
                await self._room.wait()
            self._queue(_Handover(readings, None, on_committed))
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(_Handover(readings, future, on_committed))
        await future

    def _queue(self, handover: _Handover) -> None:
        self._pending.append(handover)
        self._pending_count += handover.count
        self._set_pending_gauge()
        self._wake.set()
        if self._pending_count >= self.flush_max_readings:
            self._full.set()

    def _set_pending_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.buffer_pending_commit.set(self._pending_count)

    def _next_gap_s(self) -> float:
        """How long to let readings gather before the next commit (0: commit now)."""
        if self._pending_count >= self.flush_max_readings:
            return 0.0
        gap = min(self.flush_interval_s, MIN_GAP_S + GAP_FACTOR * self._last_commit_s)
        return max(0.0, self._last_commit_end + gap - time.monotonic())

    async def run(self) -> None:
        """Commit loop; on cancellation, commits what is queued before returning."""
        try:
            while True:
                if not self._pending:
                    self._wake.clear()
                    await self._wake.wait()
                gap = self._next_gap_s()
                if gap > 0:
                    await wait_event(self._full, gap)
                commit = asyncio.ensure_future(self._commit_some())
                try:
                    await asyncio.shield(commit)
                except asyncio.CancelledError:
                    # Stopped in the middle of a commit: its readings are out of the queue already, so finish
                    # it (the flush below commits the rest) rather than lose them.
                    await commit
                    raise
                if self._failing and self._pending:
                    await asyncio.sleep(self.flush_interval_s)  # do not spin on a failing buffer
        finally:
            self._closed = True
            self._room.set()
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Commit what is queued now, at most about ``flush_max_readings`` (whole handovers) in one go."""
        while self._pending:
            await self._commit_some()

    async def _commit_some(self) -> None:
        # A commit larger than flush_max_readings would also outgrow the buffer's in-memory tail, and the
        # sinks would then read it back from the file: bigger commits made the whole pipeline slower.
        taken = count = 0
        for handover in self._pending:
            taken += 1
            count += handover.count
            if count >= self.flush_max_readings:
                break
        pending, self._pending = self._pending[:taken], self._pending[taken:]
        self._pending_count -= count
        if self._pending_count < self.flush_max_readings:
            self._full.clear()
        batch = [r for handover in pending for r in handover.readings]
        started = time.monotonic()
        try:
            result = await self.buffer.append(batch)
        except Exception as exc:  # keep the daemon alive; waiting emitters see the error
            self._commit_failed(pending, sum(h.count for h in pending), exc)
            return
        finally:
            self._last_commit_end = time.monotonic()
            self._last_commit_s = self._last_commit_end - started
        if self._failing:
            self._failing = False
            log.warning("the buffer commits again")
        if self.metrics is not None:
            self.metrics.buffer_commit_duration.observe(self._last_commit_s)
            if result.dropped_newest:
                self.metrics.buffer_dropped.labels("drop_newest").inc(result.dropped_newest)
            if result.dropped_oldest:
                self.metrics.buffer_dropped.labels("drop_oldest").inc(result.dropped_oldest)
        self._log_drops(result.dropped_newest, result.dropped_oldest)
        self.committed_total += result.accepted
        for handover in pending:
            if handover.future is not None and not handover.future.done():
                handover.future.set_result(None)
            if handover.on_committed is not None:
                try:
                    handover.on_committed()
                except Exception:  # a counting hook must never stop the writer
                    log.exception("on_committed hook failed")
        self._after_change()
        try:
            self.on_commit()
        except Exception:  # a wake-up hook must never stop the writer
            log.exception("on_commit hook failed")

    def _commit_failed(self, pending: list[_Handover], count: int, exc: Exception) -> None:
        try:
            self.on_commit_failed(exc)
        except Exception:  # a hook must never stop the writer
            log.exception("on_commit_failed hook failed")
        if not self._failing:
            self._failing = True
            log.exception("cannot commit %d readings to the buffer; retrying with the next commit", count)
        else:
            log.debug("commit of %d readings failed again", count, exc_info=True)
        retry: list[_Handover] = []
        given_up = 0
        for handover in pending:
            if handover.future is not None:
                if not handover.future.done():
                    handover.future.set_exception(BufferCommitError(str(exc)))
                continue
            handover.attempts += 1
            if handover.attempts < NOWAIT_ATTEMPTS:
                retry.append(handover)
            else:
                given_up += handover.count
        if retry:  # first in the queue again, ahead of what came during this commit
            self._pending[:0] = retry
            self._pending_count += sum(h.count for h in retry)
            if self._pending_count >= self.flush_max_readings:
                self._full.set()
        if given_up:
            self.commit_failed_total += given_up
            if self.metrics is not None:
                self.metrics.buffer_commit_failed.inc(given_up)
            log.error(
                "gave up %d readings after %d failed commits (%s); see gateway_buffer_commit_failed_readings_total",
                given_up,
                NOWAIT_ATTEMPTS,
                exc,
            )
        self._after_change()

    def _after_change(self) -> None:
        self._set_pending_gauge()
        if self._pending_count < self.max_pending:
            self._room.set()

    def _log_drops(self, dropped_newest: int, dropped_oldest: int) -> None:
        if (dropped_newest or dropped_oldest) and not self._warned_drop:
            self._warned_drop = True
            log.error(
                "the buffer is full: dropped %d newest and %d oldest readings (overflow policy); "
                "check the sinks (gateway status) or raise buffer.max_bytes",
                dropped_newest,
                dropped_oldest,
            )
        elif not (dropped_newest or dropped_oldest) and self._warned_drop:
            self._warned_drop = False
            log.warning("the buffer accepts readings again without dropping")


class BufferCommitError(RuntimeError):
    """The buffer could not commit; the readings were not accepted."""
