"""One dispatcher per sink: read the sink's cursor, send, act on the outcome, ack.

The core owns the retry taxonomy (``gateway.sink.Outcome``):
- RETRY: keep everything, back off (capped, jittered; the server's Retry-After wins);
- AUTH: keep everything, retry slowly, log loudly (and again every 10 minutes);
- TOO_LARGE: split the batch in two and send each half;
- REJECTED: bisect down to the offending readings, dead-letter them (counted,
  inspectable with ``gateway buffer dead-letters``), deliver the rest.
A dead sink only stops its own cursor; other sinks go on.

Frames (gateway/frame.py): a batch is taken as frames, ``batch_size`` counts
values, and a sink whose route changes nothing gets them whole
(``Sink.send_frames``: one SenML pack, one template per frame). TOO_LARGE cuts
between frames, then inside a frame; REJECTED expands the frames to readings and
bisects down to the one value. Acks, counters and metrics are in values (the
ids of a frame's values are ``id .. last_id``).

Routing (gateway/routing.py): the sink's rules are applied to each batch as it
is taken from the buffer, before anything else sees it, so a retry, a split
and a dead letter only ever hold selected (and shaped) readings; the cursor is
then acked past the whole batch, the unselected readings included. A sink
with ``downsample`` (gateway/downsample.py) sends statistics per window instead,
and its cursor stays before the raw readings of the windows it still holds.

The dispatcher is supervised like a driver: an exception out of the buffer
(``take``, ``ack``, dead-lettering on a full disk) restarts its loop from the
sink's cursor with capped backoff; it shows as ``failing`` with the error in
the status and ``gateway_sink_up`` 0, is counted in
``gateway_sink_dispatcher_restarts``, and is logged once on the way in and
once on the way out. Nothing is lost: the batch in memory is read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.aio import raise_if_cancel_requested, wait_event
from gateway.buffer import AsyncBuffer, BufferedFrame, BufferedReading, BufferFullError
from gateway.downsample import Downsampler
from gateway.metrics import Metrics
from gateway.routing import Route, identity_route
from gateway.scheduling import Backoff
from gateway.sink import Outcome, SendResult, Sink

log = logging.getLogger("gateway.dispatch")

AUTH_RETRY_S = 60.0
RESTART_INITIAL_S = 1.0
RESTART_CAP_S = 60.0
AUTH_REMINDER_S = 600.0
IDLE_WAIT_S = 1.0

Refused = list[tuple[BufferedReading, str]]  # values a sink refused for good, with the reason


class SinkDispatcher:
    def __init__(
        self,
        sink: Sink,
        buffer: AsyncBuffer,
        *,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        batch_size: int | None = None,
        route: Route | None = None,
        downsampler: Downsampler | None = None,
    ) -> None:
        self.sink = sink
        self.name = sink.name
        self.buffer = buffer
        self.metrics = metrics
        self.backoff = backoff or Backoff(initial_s=0.5, cap_s=60.0)
        self.batch_size = batch_size or sink.config.batch_size
        self.route = route or identity_route()
        self.selected_total = 0
        self.filtered_total = 0
        self.downsampler = downsampler
        self._counted_through = 0  # downsampling: readings are counted when read, once
        self._new_data = asyncio.Event()
        self.failing: str | None = None
        self._last_auth_log = 0.0
        self.sent_total = 0
        self.dead_lettered_total = 0
        self.last_success_ns: int | None = None
        self.restart_backoff = Backoff(initial_s=RESTART_INITIAL_S, cap_s=RESTART_CAP_S)
        self.restarts = 0
        self.broken: str | None = None  # the dispatcher itself fails (not the sink): buffer errors
        self.broken_since: float | None = None  # time.monotonic() of the first failure of this streak

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
            while True:
                try:
                    await self._loop()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    raise_if_cancel_requested()
                    self._broke(exc)
                    await asyncio.sleep(self.restart_backoff.next_delay())
        finally:
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(self.sink.close())
            except Exception:
                log.exception("sink %s did not close cleanly", self.name)

    async def _loop(self) -> None:
        if self.downsampler is not None:
            await self._loop_downsampled(self.downsampler)
            return
        # Always starts from the sink's cursor: after a restart the batch that
        # was in memory is read again from the buffer.
        # The wake-up is cleared before every take, never after: a commit that lands while a take is on
        # the buffer's thread (or a batch on the wire) must wake the next wait, or its readings waited
        # IDLE_WAIT_S for nothing (p99 latency 1 s at light load).
        self._new_data.clear()
        batch = await self.buffer.take_frames(self.name, self.batch_size)
        while True:
            if not batch:
                self._mended()  # the buffer answers and nothing is pending
                await wait_event(self._new_data, IDLE_WAIT_S)
                self._new_data.clear()
                batch = await self.buffer.take_frames(self.name, self.batch_size)
                continue
            # Read the next batch while this one is on the wire.
            self._new_data.clear()
            prefetch = asyncio.create_task(
                self.buffer.take_frames(self.name, self.batch_size, after_id=batch[-1].last_id)
            )
            try:
                taken = _values(batch)
                if self.route.is_identity:
                    # Nothing to select or shape: the frames go as they are (a sink encodes a frame at once).
                    selected = taken
                    await self._deliver_frames_batch(batch, taken)
                else:
                    chosen = self.route.apply(_expand(batch))
                    selected = len(chosen)
                    if chosen:
                        await self._deliver_batch(chosen)
                lost = await self.buffer.ack(self.name, batch[-1].last_id, first_id=batch[0].id)
            except BaseException:
                prefetch.cancel()
                with contextlib.suppress(BaseException):
                    await prefetch  # never leave its exception unretrieved
                raise
            # Counted once acked: a batch read again after a restart is not counted twice.
            self._count_routed(selected, taken - selected)
            if lost and self.metrics is not None:
                # drop_oldest deleted these while a batch of ours held them, and we read on past them.
                self.metrics.buffer_dropped.labels("drop_oldest").inc(lost)
            self._mended()
            batch = await prefetch

    async def _loop_downsampled(self, ds: Downsampler) -> None:
        """Read on past the cursor into the windows; send closed windows; ack what no window holds any more."""
        await asyncio.to_thread(ds.restart)  # windows are rebuilt from the cursor, like a batch after a restart
        read_through: int | None = None  # None: read from the cursor
        acked = 0
        while True:
            # The windows take readings one by one, so read values (take cuts frames at the limit): a
            # short batch then means the backlog is read, which whole frames could not tell.
            self._new_data.clear()  # before the take, as in _loop
            batch = await self.buffer.take(self.name, self.batch_size, after_id=read_through)
            if batch:
                read_through = batch[-1].id
                selected = self.route.apply(batch)
                fresh = [i for i in batch if i.id > self._counted_through]
                if fresh:
                    kept = len([i for i in selected if i.id > self._counted_through])
                    self._count_routed(kept, len(fresh) - kept)
                    self._counted_through = fresh[-1].id
                ds.add(selected, ds.clock())
            if len(batch) < self.batch_size:
                # Caught up with the buffer: windows close by the clock now, not while a backlog
                # is still being read (that would send a window before its later readings).
                due = ds.due(ds.clock())
                if due:
                    await self._deliver_batch(due)
                if read_through is not None:
                    done = ds.settle(read_through)
                    if done is not None:
                        await asyncio.to_thread(ds.state.save, done)  # before the cursor moves past those readings
                    target = ds.ack_target(read_through)
                    if target > acked:
                        lost = await self.buffer.ack(self.name, target)
                        acked = target
                        if lost and self.metrics is not None:
                            self.metrics.buffer_dropped.labels("drop_oldest").inc(lost)
                self._mended()
            if not batch:
                await wait_event(self._new_data, IDLE_WAIT_S)

    def _count_routed(self, selected: int, filtered: int) -> None:
        self.selected_total += selected
        self.filtered_total += filtered
        if self.metrics is not None:
            if selected:
                self.metrics.sink_selected.labels(self.name).inc(selected)
            if filtered:
                self.metrics.sink_filtered.labels(self.name).inc(filtered)

    def _broke(self, exc: Exception) -> None:
        self.restarts += 1
        summary = f"dispatcher: {type(exc).__name__}: {exc}"
        if self.metrics is not None:
            self.metrics.sink_dispatcher_restarts.labels(self.name).inc()
            self.metrics.sink_up.labels(self.name).set(0)
        if self.broken != summary:
            log.error("sink %s: the dispatcher failed (%s); restarting it from the sink's cursor with backoff",
                      self.name, summary, exc_info=exc)  # fmt: skip
        else:
            log.debug("sink %s: the dispatcher failed again (%s)", self.name, summary)
        if isinstance(exc, BufferFullError):
            # A full disk (dead letters cannot be stored): the readings wait safely in the
            # buffer and a restart of the daemon would not free space, so this is not "stuck".
            self.broken_since = None
        elif self.broken_since is None:
            self.broken_since = time.monotonic()
        self.broken = summary

    def _mended(self) -> None:
        if self.broken is not None:
            log.warning("sink %s: the dispatcher works again", self.name)
            self.broken = None
            self.broken_since = None
            self.restart_backoff.reset()
            if self.metrics is not None and self.failing is None:
                self.metrics.sink_up.labels(self.name).set(1)

    async def _deliver_batch(self, items: Sequence[BufferedReading]) -> None:
        """Deliver a batch; readings the sink refuses for good are dead-lettered together, logged once."""
        refused: Refused = []
        await self._deliver(items, refused)
        if refused:
            await self._dead_letter(refused)

    async def _deliver_frames_batch(self, frames: Sequence[BufferedFrame], values: int) -> None:
        """``_deliver_batch`` for frames (of ``values`` values in all): sent whole while the sink accepts them."""
        refused: Refused = []
        await self._deliver_frames(frames, values, refused)
        if refused:
            await self._dead_letter(refused)

    async def _deliver(self, items: Sequence[BufferedReading], refused: Refused) -> None:
        """Deliver ``items``; the ones the sink refuses for good are added to ``refused``."""
        result = await self._send(lambda: self.sink.send([item.reading for item in items]), len(items))
        if result.outcome is not Outcome.ACCEPTED:
            await self._bisect(items, result, refused)

    async def _deliver_frames(self, frames: Sequence[BufferedFrame], values: int, refused: Refused) -> None:
        result = await self._send(lambda: self.sink.send_frames([bf.frame for bf in frames]), values)
        if result.outcome is Outcome.ACCEPTED:
            return
        if result.outcome is Outcome.TOO_LARGE and values > 1:
            # Too large is about size, not content: halves stay frames (a single frame is cut in two).
            for half in _halves(frames):
                await self._deliver_frames(half, _values(half), refused)
            return
        # Something in it is bad: bisect down to the single values, as readings, and
        # dead-letter exactly the ones still refused (the first halves are not resent whole).
        await self._bisect(_expand(frames), result, refused)

    async def _bisect(self, items: Sequence[BufferedReading], result: SendResult, refused: Refused) -> None:
        """``items`` were refused as a whole (TOO_LARGE or REJECTED): deliver each half, or refuse the one."""
        if len(items) == 1:
            refused.append((items[0], f"{result.outcome.value}: {result.detail}"[:1000]))
            return
        middle = len(items) // 2
        await self._deliver(items[:middle], refused)
        await self._deliver(items[middle:], refused)

    async def _send(self, send: Callable[[], Awaitable[SendResult]], values: int) -> SendResult:
        """Send until the answer is not transient: ACCEPTED (counted), TOO_LARGE or REJECTED.

        RETRY and AUTH are waited out here with backoff: the batch stays as it is.
        """
        while True:
            raise_if_cancel_requested()  # a sink's library may use wait_for, which can swallow it (gateway/aio.py)
            started = time.perf_counter()
            try:
                result = await send()
            except Exception as exc:  # contract says sinks don't raise; treat it as transient
                log.debug("sink %s raised", self.name, exc_info=True)
                result = SendResult(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
            if self.metrics is not None:
                self.metrics.sink_send_duration.labels(self.name).observe(time.perf_counter() - started)

            if result.outcome is Outcome.ACCEPTED:
                self._up()
                self.sent_total += values
                self.last_success_ns = time.time_ns()
                if self.metrics is not None:
                    self.metrics.sink_sent.labels(self.name).inc(values)
                return result
            if self.metrics is not None:
                self.metrics.sink_failed.labels(self.name, result.outcome.value).inc()
            if result.outcome in (Outcome.TOO_LARGE, Outcome.REJECTED):
                return result

            if self.metrics is not None:
                self.metrics.sink_retried.labels(self.name).inc()
            if result.outcome is Outcome.AUTH:
                self._auth_failed(result)
                delay = max(AUTH_RETRY_S, result.retry_after_s or 0.0)
            else:
                self._down(result.detail or result.outcome.value)
                delay = result.retry_after_s if result.retry_after_s is not None else self.backoff.next_delay()
            await asyncio.sleep(min(delay, 3600.0))

    async def _dead_letter(self, refused: Sequence[tuple[BufferedReading, str]]) -> None:
        by_reason: dict[str, list[BufferedReading]] = {}
        for item, reason in refused:
            by_reason.setdefault(reason, []).append(item)
        for reason, items in by_reason.items():
            await self.buffer.dead_letter(self.name, items, reason)
        self.dead_lettered_total += len(refused)
        if self.metrics is not None:
            self.metrics.sink_dead_lettered.labels(self.name).inc(len(refused))
        first, reason = refused[0]
        r = first.reading
        # One line per batch, not per reading: a bad device could otherwise flood the journal.
        log.error(
            "sink %s refused %d reading(s) of a batch of this dispatcher, first: device %s, %s, ts %d: %s; "
            "moved to the dead-letter table (see: gateway buffer dead-letters)",
            self.name,
            len(refused),
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
        if self.metrics is not None and self.broken is None:
            self.metrics.sink_up.labels(self.name).set(1)

    def status(self) -> dict[str, Any]:
        return {
            "type": self.sink.config.type,
            "state": "failing" if self.failing or self.broken else "ok",
            "error": self.broken or self.failing,
            "sent": self.sent_total,
            "restarts": self.restarts,
            "dead_lettered": self.dead_lettered_total,
            "selected": self.selected_total,
            "filtered": self.filtered_total,
            **({"open_windows": self.downsampler.windows.open_windows} if self.downsampler is not None else {}),
            "last_success_ns": self.last_success_ns,
            **self.sink.status(),
        }


def _values(frames: Sequence[BufferedFrame]) -> int:
    return sum([len(bf.frame.values) for bf in frames])


def _expand(frames: Sequence[BufferedFrame]) -> list[BufferedReading]:
    """Every value of ``frames`` as a reading with its buffer id, in order."""
    return [item for bf in frames for item in bf.readings()]


def _halves(frames: Sequence[BufferedFrame]) -> tuple[list[BufferedFrame], list[BufferedFrame]]:
    """``frames`` cut in two of about as many values each: between frames, or inside a lone frame."""
    if len(frames) == 1:
        (bf,) = frames
        middle = len(bf.frame.values) // 2
        return [BufferedFrame(bf.id, bf.frame.slice(0, middle))], [
            BufferedFrame(bf.id + middle, bf.frame.slice(middle, len(bf.frame.values)))
        ]
    half = _values(frames) / 2
    cut, seen = 1, len(frames[0].frame.values)
    while cut < len(frames) - 1 and seen < half:
        seen += len(frames[cut].frame.values)
        cut += 1
    return list(frames[:cut]), list(frames[cut:])
