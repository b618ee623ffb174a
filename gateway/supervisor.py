"""Runs one source (driver instance): start, poll on aligned ticks or run(emit), restart on failure.

A driver that raises is closed and started again with capped, jittered
backoff, counted in ``gateway_driver_restarts_total``; the failure is logged
once (with its traceback), repeats of it at debug level, and the recovery once.
Nothing a driver does can stop the daemon or another driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from gateway.aggregate import WindowAggregator
from gateway.aio import raise_if_cancel_requested
from gateway.config import LoadedSource
from gateway.driver import Driver, DriverContext, PolledDriver, PushDriver
from gateway.frame import Item, as_readings, count_values
from gateway.metrics import Metrics
from gateway.model import Reading
from gateway.normalise import Normaliser, Outcomes
from gateway.scheduling import FIRST_POLL_AT_ONCE, Backoff, aligned_ticks
from gateway.writer import BufferWriter

log = logging.getLogger("gateway.supervisor")

HEALTHY_AFTER_S = 60.0  # a push driver running this long without failing resets the backoff


class DriverStopped(RuntimeError):
    """run(emit) returned although it should run until cancelled."""


class SourceSupervisor:
    def __init__(
        self,
        source: LoadedSource,
        *,
        site: str,
        gateway: str,
        state_dir: str,
        writer: BufferWriter,
        metrics: Metrics | None,
        backoff: Backoff | None = None,
    ) -> None:
        self.source = source
        self.config = source.config
        self.writer = writer
        self.metrics = metrics
        self.backoff = backoff or Backoff(initial_s=1.0, cap_s=60.0)
        self.normaliser = Normaliser(
            driver=self.config.driver, source=self.config.name, source_tags=self.config.tags, metrics=metrics
        )
        self.logger = logging.getLogger(f"gateway.driver.{self.config.driver}.{self.config.name}")
        self.ctx = DriverContext(
            site=site,
            gateway=gateway,
            source=self.config.name,
            driver=self.config.driver,
            logger=self.logger,
            state_dir=state_dir,
        )
        # Poll durations, summed here for the status (the status page's poll latency): reading them back
        # from the Prometheus registry walks every metric, which cost 0.6-0.9 core with 100 sources.
        self.polls_total = 0
        self.poll_seconds_total = 0.0
        poll_histogram = metrics.poll_duration.labels(self.config.driver, self.config.name) if metrics else None

        def observe_poll(driver: str, source: str, seconds: float) -> None:
            self.polls_total += 1
            self.poll_seconds_total += seconds
            if poll_histogram is not None:
                poll_histogram.observe(seconds)

        self.ctx.observe_poll_hook = observe_poll
        if metrics is not None:
            self.ctx.count_error_hook = lambda d, s, kind: metrics.driver_errors.labels(d, s, kind).inc()
            self.ctx.device_up_hook = lambda d, s, dev, up: metrics.device_up.labels(d, s, dev).set(1 if up else 0)
        self.ctx.reject_hook = writer.buffer.reject  # undecodable messages, kept for `gateway buffer dead-letters`
        self.driver: Driver | None = None
        self.failing: str | None = None
        self.restarts = 0
        self.last_poll_ns: int | None = None
        self.readings_total = 0
        self.aggregator = WindowAggregator(self.config.aggregate) if self.config.aggregate is not None else None
        self.aggregates_total = 0

    async def emit(self, items: Sequence[Item], *, wait_commit: bool = True) -> None:
        # Frames stay frames from here to the buffer; readings_total and the outcomes count values.
        normalised, outcomes = self.normaliser.prepare(items)
        if self.aggregator is not None:
            # Held in memory until their window is sent (gateway/aggregate.py, "Durability"); windows are per
            # series, so the aggregator takes the values one by one.
            self.aggregator.add(as_readings(normalised), time.time_ns())
            self.normaliser.count(outcomes)
            self.readings_total += count_values(normalised)
        elif not wait_commit:
            # Queued for the next commit; counted when it is committed (never, if given up: the writer counts those).
            await self.writer.emit(
                normalised, wait_commit=False, on_committed=lambda: self._counted(normalised, outcomes)
            )
        else:
            # Counted once committed (a failed commit raises BufferCommitError: not counted). Shielded:
            # if this source is cancelled (stop, reload) while its readings wait for the group commit,
            # the writer still commits them, and they are counted then.
            commit = asyncio.create_task(self._commit_counted(normalised, outcomes))
            commit.add_done_callback(_retrieve)
            await asyncio.shield(commit)
        if self.failing is not None and isinstance(self.driver, PushDriver):
            self._recovered()

    async def _commit_counted(self, readings: Sequence[Item], outcomes: Outcomes) -> None:
        await self._commit(readings)
        self._counted(readings, outcomes)

    def _counted(self, readings: Sequence[Item], outcomes: Outcomes) -> None:
        self.normaliser.count(outcomes)
        self.readings_total += count_values(readings)

    async def _commit(self, readings: Sequence[Item]) -> None:
        await self.writer.emit(readings)

    def _failed(self, exc: BaseException, where: str) -> None:
        self.restarts += 1
        if self.metrics is not None:
            self.metrics.driver_restarts.labels(self.config.driver, self.config.name).inc()
        summary = f"{where}: {type(exc).__name__}: {exc}"
        if self.failing != summary:
            self.logger.error("source %s failed (%s); restarting with backoff", self.config.name, summary, exc_info=exc)
        else:
            self.logger.debug("source %s failed again (%s)", self.config.name, summary)
        self.failing = summary

    def _recovered(self) -> None:
        if self.failing is not None:
            self.logger.warning("source %s is working again", self.config.name)
            self.failing = None
        self.backoff.reset()

    async def run(self) -> None:
        if self.aggregator is None:
            await self._run_driver()
            return
        sender = asyncio.create_task(self._send_windows_forever(self.aggregator), name=f"aggregate:{self.config.name}")
        try:
            await self._run_driver()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            # A clean stop or a reload: send the open windows now, partial, rather than lose them.
            try:
                await self._send(self.aggregator.close_all())
            except Exception:
                log.exception("source %s: the open aggregate windows could not be committed", self.config.name)

    async def _send_windows_forever(self, aggregator: WindowAggregator) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._send(aggregator.due(time.time_ns()))
            except Exception:  # the buffer refused a commit: the aggregates stay counted, try the next ones
                log.exception("source %s: cannot commit aggregates", self.config.name)

    async def _send(self, aggregates: Sequence[Reading]) -> None:
        if aggregates:
            await self._commit(aggregates)
            self.aggregates_total += len(aggregates)

    async def _run_driver(self) -> None:
        while True:
            driver = self.source.driver_class(self.config, self.ctx)
            self.driver = driver
            stage = "start"
            started = time.monotonic()
            try:
                await driver.start()
                if isinstance(driver, PolledDriver):
                    stage = "poll"
                    await self._poll_forever(driver)
                elif isinstance(driver, PushDriver):
                    stage = "run"
                    await driver.run(self.emit)
                    raise DriverStopped("run() returned")
                else:
                    raise TypeError(f"{type(driver).__name__} is neither a PolledDriver nor a PushDriver")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancel_requested()  # a library's wait_for may have turned our cancellation into this
                self._failed(exc, stage)
                if time.monotonic() - started > HEALTHY_AFTER_S:
                    self.backoff.reset()
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(10):
                        await asyncio.shield(driver.close())
                self.driver = None
            await asyncio.sleep(self.backoff.next_delay())

    async def _poll_forever(self, driver: PolledDriver) -> None:
        interval = self.config.interval
        async for _tick, missed in aligned_ticks(interval, first_at_once=FIRST_POLL_AT_ONCE):
            raise_if_cancel_requested()  # see gateway/aio.py
            if missed and self.metrics is not None:
                self.metrics.missed_ticks.labels(self.config.driver, self.config.name).inc(missed)
            t0 = time.perf_counter()
            # A poll that hangs longer than a few intervals is a failure, not a wait.
            async with asyncio.timeout(max(3 * interval, 5.0)):
                readings = await driver.poll()
            self.ctx.observe_poll(time.perf_counter() - t0)
            self.last_poll_ns = time.time_ns()
            # Nothing to acknowledge: do not let the commit cadence pace the polls.
            await self.emit(readings, wait_commit=False)
            self._recovered()

    def status(self) -> dict[str, Any]:
        # Once a second for every source (status.json and the status page share it): built directly, no
        # context manager or throw-away dicts, a few microseconds a source.
        detail: dict[str, Any] = {}
        if self.driver is not None:
            try:
                detail = self.driver.status()
            except Exception:  # a driver's status must never break the gateway's
                detail = {}
        down = self.ctx._down
        status: dict[str, Any] = {
            "driver": self.config.driver,
            "state": "failing" if self.failing else ("running" if self.driver else "restarting"),
            "error": self.failing,
            "restarts": self.restarts,
            "readings": self.readings_total,
            "polls": self.polls_total,
            "poll_seconds_total": round(self.poll_seconds_total, 6),
        }
        if self.aggregator is not None:
            status["aggregates"] = self.aggregates_total
            status["open_windows"] = self.aggregator.open_windows
            status["windows_reopened"] = self.aggregator.reopened
        status["devices_down"] = sorted(down)
        status["down_reasons"] = dict(down)  # device -> why, for the status page
        if detail:
            status["detail"] = detail
        return status


def _retrieve(task: asyncio.Task[None]) -> None:
    # Nobody awaits a shielded commit whose emitter was cancelled: retrieve its error here.
    if not task.cancelled():
        task.exception()
