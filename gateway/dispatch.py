"""One dispatcher per sink: read the sink's cursor, send, act on the outcome, ack.

The core owns the retry taxonomy (``gateway.sink.Outcome``):
- RETRY: keep everything, back off (capped, jittered; the server's Retry-After wins);
- AUTH: keep everything, retry slowly, log loudly (and again every 10 minutes);
- TOO_LARGE: split the batch in two and send each half;
- REJECTED: bisect down to the offending readings, dead-letter them (counted,
  inspectable with ``gateway buffer dead-letters``), deliver the rest.
A dead sink only stops its own cursor; other sinks go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from gateway.aio import wait_event
from gateway.buffer import AsyncBuffer, BufferedReading
from gateway.metrics import Metrics
from gateway.scheduling import Backoff
from gateway.sink import Outcome, SendResult, Sink

log = logging.getLogger("gateway.dispatch")

AUTH_RETRY_S = 60.0
AUTH_REMINDER_S = 600.0
IDLE_WAIT_S = 1.0


class SinkDispatcher:
    def __init__(
        self,
        sink: Sink,
        buffer: AsyncBuffer,
        *,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.buffer = buffer
        self.metrics = metrics
        self.backoff = backoff or Backoff(initial_s=0.5, cap_s=60.0)
        self.batch_size = batch_size or sink.config.batch_size
        self._new_data = asyncio.Event()
        self.failing: str | None = None
        self._last_auth_log = 0.0
        self.sent_total = 0
        self.dead_lettered_total = 0
        self.last_success_ns: int | None = None

    def notify(self) -> None:
        """Called after each buffer commit: wake up if idle."""
        self._new_data.set()

    async def run(self) -> None:
        try:
            await self.sink.open()
        except Exception as exc:  # a sink must not raise here, but never let it kill the daemon
            log.exception("sink %s failed to open; will retry on send", self.name)
            self._down(f"open failed: {exc}")
        try:
            await self._loop()
        finally:
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(self.sink.close())
            except Exception:
                log.exception("sink %s did not close cleanly", self.name)

    async def _loop(self) -> None:
        batch = await self.buffer.take(self.name, self.batch_size)
        while True:
            if not batch:
                self._new_data.clear()
                await wait_event(self._new_data, IDLE_WAIT_S)
                batch = await self.buffer.take(self.name, self.batch_size)
                continue
            # Read the next batch while this one is on the wire.
            prefetch = asyncio.create_task(self.buffer.take(self.name, self.batch_size, after_id=batch[-1].id))
            try:
                await self._deliver(batch)
                await self.buffer.ack(self.name, batch[-1].id)
            except BaseException:
                prefetch.cancel()
                raise
            batch = await prefetch

    async def _deliver(self, items: Sequence[BufferedReading]) -> None:
        """Deliver ``items`` or dead-letter the ones the sink refuses; returns when done."""
        while True:
            started = time.perf_counter()
            try:
                result = await self.sink.send([item.reading for item in items])
            except Exception as exc:  # contract says sinks don't raise; treat it as transient
                log.debug("sink %s raised", self.name, exc_info=True)
                result = SendResult(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
            if self.metrics is not None:
                self.metrics.sink_send_duration.labels(self.name).observe(time.perf_counter() - started)

            if result.outcome is Outcome.ACCEPTED:
                self._up()
                self.sent_total += len(items)
                self.last_success_ns = time.time_ns()
                if self.metrics is not None:
                    self.metrics.sink_sent.labels(self.name).inc(len(items))
                return
            if self.metrics is not None:
                self.metrics.sink_failed.labels(self.name, result.outcome.value).inc()

            if result.outcome in (Outcome.TOO_LARGE, Outcome.REJECTED):
                if len(items) == 1:
                    await self._dead_letter(items, result)
                    return
                middle = len(items) // 2
                await self._deliver(items[:middle])
                await self._deliver(items[middle:])
                return

            if self.metrics is not None:
                self.metrics.sink_retried.labels(self.name).inc()
            if result.outcome is Outcome.AUTH:
                self._auth_failed(result)
                delay = max(AUTH_RETRY_S, result.retry_after_s or 0.0)
            else:
                self._down(result.detail or result.outcome.value)
                delay = result.retry_after_s if result.retry_after_s is not None else self.backoff.next_delay()
            await asyncio.sleep(min(delay, 3600.0))

    async def _dead_letter(self, items: Sequence[BufferedReading], result: SendResult) -> None:
        reason = f"{result.outcome.value}: {result.detail}"[:1000]
        await self.buffer.dead_letter(self.name, items, reason)
        self.dead_lettered_total += len(items)
        if self.metrics is not None:
            self.metrics.sink_dead_lettered.labels(self.name).inc(len(items))
        r = items[0].reading
        log.error(
            "sink %s refused a reading (device %s, %s, ts %d): %s; moved to the dead-letter table "
            "(see: gateway buffer dead-letters)",
            self.name,
            r.device,
            r.quantity,
            r.ts_ns,
            reason,
        )

    def _down(self, reason: str) -> None:
        if self.failing is None:
            log.error("sink %s is failing: %s; keeping readings in the buffer and retrying", self.name, reason)
        self.failing = reason
        if self.metrics is not None:
            self.metrics.sink_up.labels(self.name).set(0)

    def _auth_failed(self, result: SendResult) -> None:
        now = time.monotonic()
        if self.failing is None or now - self._last_auth_log > AUTH_REMINDER_S:
            log.error(
                "sink %s REJECTS OUR CREDENTIALS (%s): nothing is lost, readings stay in the buffer; "
                "fix the token/password (file or env var named in the config) and run systemctl reload gateway",
                self.name,
                result.detail,
            )
            self._last_auth_log = now
        self.failing = f"authentication: {result.detail}"
        if self.metrics is not None:
            self.metrics.sink_up.labels(self.name).set(0)

    def _up(self) -> None:
        if self.failing is not None:
            log.warning("sink %s is accepting readings again", self.name)
            self.failing = None
        self.backoff.reset()
        if self.metrics is not None:
            self.metrics.sink_up.labels(self.name).set(1)

    def status(self) -> dict[str, Any]:
        return {
            "type": self.sink.config.type,
            "state": "failing" if self.failing else "ok",
            "error": self.failing,
            "sent": self.sent_total,
            "dead_lettered": self.dead_lettered_total,
            "last_success_ns": self.last_success_ns,
            **self.sink.status(),
        }
