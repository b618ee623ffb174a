"""The dispatcher's retry taxonomy, against a scripted sink and a real on-disk buffer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.buffer import AsyncBuffer, BufferedReading, BufferFullError, logical_size
from gateway.dispatch import SinkDispatcher
from gateway.frame import Frame, FrameFields
from gateway.metrics import Metrics
from gateway.model import Reading
from gateway.routing import Route, RouteConfig, Rule
from gateway.scheduling import Backoff
from gateway.sink import Outcome, SendResult, Sink, SinkConfig
from gateway.sinks.influxdb import InfluxDBSink, InfluxDBSinkConfig
from gateway.writer import BufferWriter
from tests.servers import VictoriaMetrics


def readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading(ts_ns=1_700_000_000_000_000_000 + i, site="s", gateway="g", device="d", quantity="sequence",
                    value=i, unit="count") for i in range(start, start + n)]  # fmt: skip


class ScriptedSink(Sink):
    """A sink whose answers are decided by a function of the batch (the test's 'server')."""

    config_model = SinkConfig

    def __init__(self, name: str, answer: object) -> None:
        super().__init__(SinkConfig(type="scripted", name=name, batch_size=64), site="s", gateway="g")
        self.answer = answer
        self.calls: list[list[int]] = []
        self.stored: list[int] = []

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        values = [int(r.value) for r in batch]  # type: ignore[arg-type]
        self.calls.append(values)
        result: SendResult = self.answer(values, len(self.calls))  # type: ignore[operator]
        if result.outcome is Outcome.ACCEPTED:
            self.stored.extend(values)
        return result


async def run_until(predicate: object, *dispatchers: SinkDispatcher, timeout: float = 10) -> None:
    tasks = [asyncio.create_task(d.run()) for d in dispatchers]
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                await asyncio.sleep(0.01)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def buffer(tmp_path: Path):  # type: ignore[no-untyped-def]
    buf = await AsyncBuffer.open(tmp_path / "buffer.sqlite")
    yield buf
    await buf.close()


def fast() -> Backoff:
    return Backoff(initial_s=0.01, cap_s=0.05)


async def test_everything_is_delivered_in_order_and_acked(buffer: AsyncBuffer) -> None:
    sink = ScriptedSink("a", lambda values, call: SendResult.ok())
    await buffer.set_sinks(["a"])
    await buffer.append(readings(500))
    d = SinkDispatcher(sink, buffer, backoff=fast())
    await run_until(lambda: d.selected_total == 500, d)  # counted once acked (stored is before the ack)
    assert sink.stored == list(range(500))
    assert max(len(c) for c in sink.calls) == 64
    stats = await buffer.stats()
    assert stats.readings == 0 and stats.sinks["a"].pending == 0


async def test_retry_keeps_everything_and_delivers_after_recovery(buffer: AsyncBuffer) -> None:
    metrics = Metrics()
    sink = ScriptedSink("a", lambda values, call: SendResult(Outcome.RETRY, "503") if call <= 5 else SendResult.ok())
    await buffer.set_sinks(["a"])
    await buffer.append(readings(100))
    d = SinkDispatcher(sink, buffer, metrics=metrics, backoff=fast())
    await run_until(lambda: len(sink.stored) == 100, d)
    assert sink.stored == list(range(100))
    assert metrics.registry.get_sample_value("gateway_sink_retries_total", {"sink": "a"}) == 5
    assert metrics.registry.get_sample_value("gateway_sink_up", {"sink": "a"}) == 1


async def test_retry_after_hint_is_honoured(buffer: AsyncBuffer) -> None:
    sink = ScriptedSink(
        "a", lambda values, call: SendResult(Outcome.RETRY, "429", retry_after_s=0.3) if call == 1 else SendResult.ok()
    )
    await buffer.set_sinks(["a"])
    await buffer.append(readings(3))
    loop = asyncio.get_running_loop()
    times: list[float] = []
    original = sink.send

    async def timed(batch: Sequence[Reading]) -> SendResult:
        times.append(loop.time())
        return await original(batch)

    sink.send = timed  # type: ignore[method-assign]
    await run_until(lambda: len(sink.stored) == 3, SinkDispatcher(sink, buffer, backoff=fast()))
    assert times[1] - times[0] >= 0.29


async def test_too_large_splits_the_batch(buffer: AsyncBuffer) -> None:
    sink = ScriptedSink(
        "a", lambda values, call: SendResult(Outcome.TOO_LARGE) if len(values) > 10 else SendResult.ok()
    )
    await buffer.set_sinks(["a"])
    await buffer.append(readings(64))
    await run_until(lambda: len(sink.stored) == 64, SinkDispatcher(sink, buffer, backoff=fast()))
    assert sink.stored == list(range(64))
    # 64 -> 32 -> 16 -> 8 (accepted): every half is retried on its own.
    assert sorted(len(c) for c in sink.calls if len(c) > 10) == [16, 16, 16, 16, 32, 32, 64]


async def test_rejected_readings_are_bisected_out_and_dead_lettered(buffer: AsyncBuffer) -> None:
    poison = {7, 40}
    metrics = Metrics()

    def answer(values: list[int], call: int) -> SendResult:
        bad = poison.intersection(values)
        return SendResult(Outcome.REJECTED, f"unparsable value {sorted(bad)}") if bad else SendResult.ok()

    sink = ScriptedSink("a", answer)
    await buffer.set_sinks(["a"])
    await buffer.append(readings(64))
    d = SinkDispatcher(sink, buffer, metrics=metrics, backoff=fast())
    # The refused readings are dead-lettered together once the batch is through.
    await run_until(lambda: len(sink.stored) == 62 and d.dead_lettered_total == 2, d)
    assert sink.stored == [v for v in range(64) if v not in poison]
    letters = await buffer.dead_letters("a")
    assert sorted(int(dl.reading.value) for dl in letters) == sorted(poison)  # type: ignore[arg-type]
    assert all("unparsable value" in dl.reason for dl in letters)
    assert metrics.registry.get_sample_value("gateway_sink_dead_lettered_readings_total", {"sink": "a"}) == 2
    # Bisection costs O(k log n) sends, not one send per reading.
    assert len(sink.calls) < 30


async def test_auth_failure_keeps_readings_and_logs_loudly(buffer: AsyncBuffer, caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr("gateway.dispatch.AUTH_RETRY_S", 0.05)
    sink = ScriptedSink("a", lambda v, call: SendResult(Outcome.AUTH, "401") if call <= 3 else SendResult.ok())
    await buffer.set_sinks(["a"])
    await buffer.append(readings(10))
    await run_until(lambda: len(sink.stored) == 10, SinkDispatcher(sink, buffer, backoff=fast()))
    assert sink.stored == list(range(10))
    loud = [r for r in caplog.records if "REJECTS OUR CREDENTIALS" in r.message]
    assert len(loud) == 1  # once on the transition, then a reminder only every 10 minutes


async def test_a_dead_sink_does_not_hold_back_another(buffer: AsyncBuffer) -> None:
    dead = ScriptedSink("dead", lambda v, c: SendResult(Outcome.RETRY, "connection refused"))
    alive = ScriptedSink("alive", lambda v, c: SendResult.ok())
    await buffer.set_sinks(["dead", "alive"])
    await buffer.append(readings(200))
    dd = SinkDispatcher(dead, buffer, backoff=fast())
    da = SinkDispatcher(alive, buffer, backoff=fast())
    await run_until(lambda: len(alive.stored) == 200, dd, da)
    stats = await buffer.stats()
    assert stats.sinks["alive"].pending == 0
    assert stats.sinks["dead"].pending == 200
    assert stats.readings == 200  # kept for the dead sink


async def test_a_sink_that_raises_is_treated_as_transient(buffer: AsyncBuffer) -> None:
    def answer(values: list[int], call: int) -> SendResult:
        if call == 1:
            raise ConnectionResetError("peer reset")
        return SendResult.ok()

    sink = ScriptedSink("a", answer)
    await buffer.set_sinks(["a"])
    await buffer.append(readings(5))
    await run_until(lambda: len(sink.stored) == 5, SinkDispatcher(sink, buffer, backoff=fast()))
    assert sink.stored == list(range(5))


@pytest.mark.parametrize("steps", range(6))
async def test_a_dispatcher_woken_as_it_is_cancelled_still_stops(buffer: AsyncBuffer, steps: int) -> None:
    # Python 3.11's asyncio.wait_for swallows a cancellation that lands in the loop
    # iteration where the awaited event fires; the daemon then hung at shutdown.
    sink = ScriptedSink("a", lambda values, call: SendResult.ok())
    await buffer.set_sinks(["a"])
    d = SinkDispatcher(sink, buffer, backoff=fast())
    task = asyncio.create_task(d.run())
    for _ in range(20):  # let it reach its idle wait
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    d.notify()
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=3)
    assert task in done and task.cancelled()


async def test_refused_readings_are_logged_once_per_batch(
    buffer: AsyncBuffer, caplog: pytest.LogCaptureFixture
) -> None:
    poison = {3, 9, 20, 41}

    def answer(values: list[int], call: int) -> SendResult:
        bad = poison.intersection(values)
        return SendResult(Outcome.REJECTED, f"bad value {min(bad)}") if bad else SendResult.ok()

    sink = ScriptedSink("a", answer)
    await buffer.set_sinks(["a"])
    await buffer.append(readings(64))
    caplog.set_level("ERROR", logger="gateway.dispatch")
    d = SinkDispatcher(sink, buffer, backoff=fast())
    await run_until(lambda: len(sink.stored) == 60 and d.dead_lettered_total == 4, d)
    assert len(await buffer.dead_letters("a")) == 4
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1  # one batch: one line with the count and the first reason
    assert "refused 4 reading(s)" in refused[0] and "bad value 3" in refused[0]


class FlakyBuffer(AsyncBuffer):
    """The real buffer, whose dead-lettering meets a full disk the first ``failures`` times."""

    failures = 2

    async def dead_letter(self, sink: str, items: Sequence[BufferedReading], reason: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise BufferFullError(self.path, f"disk full: {len(items)} dead letters not stored")
        await super().dead_letter(sink, items, reason)


async def test_a_dispatcher_that_fails_is_restarted_and_shows_failing_meanwhile(tmp_path: Path) -> None:
    buffer = await FlakyBuffer.open(tmp_path / "buffer.sqlite")
    try:
        metrics = Metrics()
        sink = ScriptedSink("a", lambda v, c: SendResult(Outcome.REJECTED, "bad") if 5 in v else SendResult.ok())
        await buffer.set_sinks(["a"])
        await buffer.append(readings(10))
        d = SinkDispatcher(sink, buffer, metrics=metrics, backoff=fast())
        d.restart_backoff = Backoff(initial_s=0.2, cap_s=0.2)
        seen: list[dict[str, object]] = []
        await run_until(lambda: seen.append(d.status()) or d.status()["state"] == "failing", d)
        assert "BufferFullError" in str(d.status()["error"])
        assert metrics.registry.get_sample_value("gateway_sink_up", {"sink": "a"}) == 0
        await buffer.append(readings(10, start=10))
        # The dispatcher task lives on: it restarts from the cursor and delivers everything once the disk has room.
        await run_until(lambda: len(set(sink.stored)) == 19 and d.status()["state"] == "ok", d)
        assert sorted(set(sink.stored)) == [v for v in range(20) if v != 5]
        assert [int(dl.reading.value) for dl in await buffer.dead_letters("a")] == [5]  # type: ignore[arg-type]
        restarts = metrics.registry.get_sample_value("gateway_sink_dispatcher_restarts_total", {"sink": "a"})
        assert restarts is not None and restarts >= 2
        assert metrics.registry.get_sample_value("gateway_sink_up", {"sink": "a"}) == 1
        assert (await buffer.stats()).sinks["a"].pending == 0
    finally:
        await buffer.close()


class GatedSink(ScriptedSink):
    """Accepts everything, but its first send waits until the test opens the gate."""

    def __init__(self, name: str) -> None:
        super().__init__(name, lambda values, call: SendResult.ok())
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        self.waiting.set()
        await self.gate.wait()
        return await super().send(batch)


@pytest.mark.parametrize("held_batch", ["delivered", "abandoned"])
async def test_drop_counters_match_what_the_sink_received(tmp_path: Path, held_batch: str) -> None:
    # drop_oldest deletes readings the dispatcher has already taken: they are dropped only
    # if it does not deliver them after all (it is restarted and reads on from the buffer).
    per_reading = logical_size(readings(1)[0])
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite", max_bytes=40 * per_reading, sync="normal")
    metrics = Metrics()
    sink = GatedSink("a")
    await buffer.set_sinks(["a"])
    dispatcher = SinkDispatcher(sink, buffer, metrics=metrics, backoff=fast(), batch_size=10)
    writer = BufferWriter(buffer, flush_interval_s=0.01, flush_max_readings=10, metrics=metrics,
                          on_commit=lambda: dispatcher.notify())  # fmt: skip
    writer_task = asyncio.create_task(writer.run())
    task = asyncio.create_task(dispatcher.run())
    try:
        await writer.emit(readings(30))
        await asyncio.wait_for(sink.waiting.wait(), 10)  # batch 0..9 on the wire, 10..19 prefetched
        for start in range(30, 130, 10):
            await writer.emit(readings(10, start))  # overflow deletes the oldest, those in flight included
        assert (await buffer.stats()).dropped_oldest_total < 100
        if held_batch == "abandoned":
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            sink = ScriptedSink("a", lambda values, call: SendResult.ok())
            dispatcher = SinkDispatcher(sink, buffer, metrics=metrics, backoff=fast(), batch_size=10)
            task = asyncio.create_task(dispatcher.run())
        else:
            sink.gate.set()
        async with asyncio.timeout(10):
            while (await buffer.stats()).sinks["a"].pending:
                await asyncio.sleep(0.01)
        received = set(sink.stored)
        assert len(received) == len(sink.stored)  # no duplicates
        stats = await buffer.stats()
        missing = 130 - len(received)
        assert (held_batch == "delivered") == set(range(20)).issubset(received)
        assert stats.dropped_oldest_total == missing > 0
        assert metrics.registry.get_sample_value("gateway_buffer_dropped_total", {"policy": "drop_oldest"}) == missing
    finally:
        task.cancel()
        writer_task.cancel()
        await asyncio.gather(task, writer_task, return_exceptions=True)
        await buffer.close()


# --- frames ----------------------------------------------------------------------------------


def frames(count: int, width: int, start: int = 0) -> list[Frame]:
    """``count`` polls of one meter, ``width`` values each, the values counting up from ``start``."""
    fields = FrameFields.of([f"register_{i}" for i in range(width)], ["V"] * width)
    return [Frame(1_700_000_000_000_000_000 + start + k, "s", "g", "meter", fields,
                  tuple(range(start + k * width, start + (k + 1) * width))) for k in range(count)]  # fmt: skip


class FrameSink(ScriptedSink):
    """A ScriptedSink that takes frames whole; ``frame_calls`` holds the values of each ``send_frames``."""

    def __init__(self, name: str, answer: object) -> None:
        super().__init__(name, answer)
        self.frame_calls: list[list[int]] = []
        self.frame_widths: list[list[int]] = []

    async def send_frames(self, batch: Sequence[Frame]) -> SendResult:
        values = [int(v) for f in batch for v in f.values]
        self.frame_calls.append(values)
        self.frame_widths.append([len(f) for f in batch])
        result: SendResult = self.answer(values, len(self.calls) + len(self.frame_calls))  # type: ignore[operator]
        if result.outcome is Outcome.ACCEPTED:
            self.stored.extend(values)
        return result


async def test_frames_are_sent_whole_and_counted_and_acked_in_values(buffer: AsyncBuffer) -> None:
    metrics = Metrics()
    sink = FrameSink("a", lambda values, call: SendResult.ok())
    await buffer.set_sinks(["a"])
    await buffer.append(frames(10, 50))
    d = SinkDispatcher(sink, buffer, metrics=metrics, backoff=fast(), batch_size=120)
    await run_until(lambda: d.selected_total == 500, d)  # counted once acked
    assert sink.stored == list(range(500))
    assert sink.calls == []  # never expanded to readings
    assert all(len(values) <= 120 for values in sink.frame_calls)
    assert max(max(widths) for widths in sink.frame_widths) == 50  # a poll travels as one frame
    assert metrics.registry.get_sample_value("gateway_sink_sent_readings_total", {"sink": "a"}) == 500
    assert d.sent_total == 500 and d.selected_total == 500
    stats = await buffer.stats()
    assert stats.readings == 0 and stats.sinks["a"].pending == 0


async def test_too_large_splits_between_frames_then_inside_a_frame(buffer: AsyncBuffer) -> None:
    sink = FrameSink("a", lambda values, call: SendResult(Outcome.TOO_LARGE) if len(values) > 10 else SendResult.ok())
    await buffer.set_sinks(["a"])
    await buffer.append([*frames(1, 40), *frames(4, 6, start=40)])
    d = SinkDispatcher(sink, buffer, backoff=fast())
    await run_until(lambda: d.selected_total == 64, d)
    assert sink.stored == list(range(64))
    assert sink.calls == []  # too large is about size: the halves stay frames
    # 64 values -> the 40-value frame | four 6-value frames; the frame is cut 20+20 -> 10+10 ...
    assert [values for values in sink.frame_calls if len(values) <= 10][:2] == [list(range(10)), list(range(10, 20))]
    assert (await buffer.stats()).sinks["a"].pending == 0


async def test_one_refused_value_of_a_frame_is_dead_lettered_alone(buffer: AsyncBuffer) -> None:
    metrics = Metrics()

    def answer(values: list[int], call: int) -> SendResult:
        return SendResult(Outcome.REJECTED, "bad value 137") if 137 in values else SendResult.ok()

    sink = FrameSink("a", answer)
    await buffer.set_sinks(["a"])
    await buffer.append(frames(3, 100))
    d = SinkDispatcher(sink, buffer, metrics=metrics, backoff=fast(), batch_size=1000)
    await run_until(lambda: d.selected_total == 300, d)
    assert sink.frame_calls[0] == list(range(300))  # the frames went whole first
    assert sink.stored == [v for v in range(300) if v != 137]
    [letter] = await buffer.dead_letters("a")
    assert (letter.reading.value, letter.reading.quantity) == (137, "register_37")
    assert letter.reason == "rejected: bad value 137"
    assert metrics.registry.get_sample_value("gateway_sink_dead_lettered_readings_total", {"sink": "a"}) == 1
    assert metrics.registry.get_sample_value("gateway_sink_sent_readings_total", {"sink": "a"}) == 299
    assert len(sink.calls) + len(sink.frame_calls) < 25  # bisection: O(log n) sends, not one per value
    assert (await buffer.stats()).sinks["a"].pending == 0


async def test_a_route_that_selects_sees_the_frames_values_as_readings(buffer: AsyncBuffer) -> None:
    sink = FrameSink("a", lambda values, call: SendResult.ok())
    await buffer.set_sinks(["a"])
    await buffer.append(frames(4, 5))
    route = Route(RouteConfig(exclude=[Rule(quantity=["register_3"])]), {})
    d = SinkDispatcher(sink, buffer, backoff=fast(), route=route)
    await run_until(lambda: d.selected_total == 16, d)
    assert sink.stored == [v for v in range(20) if v % 5 != 3]
    assert sink.frame_calls == [] and (d.selected_total, d.filtered_total) == (16, 4)
    assert (await buffer.stats()).sinks["a"].pending == 0


async def test_a_nan_in_a_frame_is_dead_lettered_and_the_rest_stored_in_victoriametrics(
    buffer: AsyncBuffer, victoria: VictoriaMetrics
) -> None:
    cfg = InfluxDBSinkConfig(type="influxdb", url=victoria.url, org="o", bucket="b", batch_size=1000)
    sink = InfluxDBSink(cfg, site="s", gateway="g")
    values = tuple(float("nan") if i == 42 else i / 4 for i in range(100))
    frame = Frame(1_700_000_000_000_000_000, "s", "g", "meter",
                  FrameFields.of([f"register_{i}" for i in range(100)], ["V"] * 100), values)  # fmt: skip
    await buffer.set_sinks([sink.name])
    await buffer.append([frame])
    d = SinkDispatcher(sink, buffer, backoff=fast())
    await run_until(lambda: d.selected_total == 100, d)
    [letter] = await buffer.dead_letters(sink.name)
    assert letter.reading.quantity == "register_42" and "NaN" in letter.reason
    stored = {s["metric"]["__name__"]: s["values"] for s in victoria.export('{device="meter"}')}  # type: ignore[index]
    assert stored == {f"register_{i}_value": [i / 4] for i in range(100) if i != 42}


class CommitDuringTake:
    """The real buffer, with a commit landing while the dispatcher's (empty) take is on the buffer's thread:
    the writer commits and wakes the dispatcher before the take returns."""

    def __init__(self, buffer: AsyncBuffer) -> None:
        self.buffer = buffer
        self.dispatcher: SinkDispatcher | None = None
        self.committed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.buffer, name)

    async def take_frames(self, sink: str, limit: int, after_id: int | None = None) -> list[object]:
        got = await self.buffer.take_frames(sink, limit, after_id)
        if not got and not self.committed and self.dispatcher is not None:
            self.committed = True
            await self.buffer.append(readings(3))
            self.dispatcher.notify()
        return got  # type: ignore[return-value]


async def test_a_commit_during_a_take_wakes_the_dispatcher(
    buffer: AsyncBuffer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wake-up was cleared after the take: a commit landing meanwhile waited IDLE_WAIT_S (1 s, p99 latency).
    monkeypatch.setattr("gateway.dispatch.IDLE_WAIT_S", 600.0)
    sink = ScriptedSink("a", lambda values, call: SendResult.ok())
    await buffer.set_sinks(["a"])
    racy = CommitDuringTake(buffer)
    d = SinkDispatcher(sink, racy, backoff=fast())  # type: ignore[arg-type]
    racy.dispatcher = d
    await run_until(lambda: sink.stored == [0, 1, 2], d, timeout=30)
    assert racy.committed
