"""Per-sink downsampling through the real buffer and dispatcher: windows survive a crash at any moment."""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.buffer import AsyncBuffer
from gateway.config import ConfigError, parse_config
from gateway.dispatch import SinkDispatcher
from gateway.downsample import DownsampleConfig, Downsampler, DownsampleState
from gateway.frame import Frame, FrameFields, as_readings
from gateway.model import Reading
from gateway.routing import Route, RouteConfig, Rule
from gateway.scheduling import Backoff
from gateway.sink import SendResult, Sink, SinkConfig

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a window boundary for windows of 1, 2, 5 and 10 s
STATS = ["mean", "min", "max", "last", "count"]
Key = tuple[str, str, str, int]  # device, quantity, stat, window start


class StoreSink(Sink):
    """A store keeping one point per series and timestamp (the last write wins), like InfluxDB and VictoriaMetrics."""

    config_model = SinkConfig

    def __init__(self, name: str) -> None:
        super().__init__(SinkConfig(type="store", name=name, batch_size=5), site="s", gateway="g")
        self.points: dict[Key, float] = {}
        self.sends = 0
        self.crash_after: int | None = None
        self.crashed = asyncio.Event()

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        self.sends += 1
        for r in batch:
            self.points[(r.device, r.quantity, r.tags.get("stat", "mean"), r.ts_ns)] = float(r.value)  # type: ignore[arg-type]
        if self.crash_after is not None and self.sends >= self.crash_after:
            self.crashed.set()  # the test kills the dispatcher now: before or while it acks
            await asyncio.sleep(3600)
        return SendResult.ok()


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def reference(readings: Sequence[Reading], window_ns: int) -> dict[Key, float]:
    windows: dict[tuple[str, str, int], list[Reading]] = defaultdict(list)
    for r in readings:
        windows[(r.device, r.quantity, r.ts_ns - r.ts_ns % window_ns)].append(r)
    out: dict[Key, float] = {}
    for (device, quantity, start), rs in windows.items():
        values = [float(r.value) for r in rs]  # type: ignore[arg-type]
        last = max(enumerate(rs), key=lambda p: (p[1].ts_ns, p[0]))[1]  # the latest; the later one on a tie
        stats = {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
                 "last": float(last.value), "count": float(len(values))}  # type: ignore[arg-type]  # fmt: skip
        out.update({(device, quantity, stat, start): value for stat, value in stats.items()})
    return out


def fast() -> Backoff:
    return Backoff(initial_s=0.001, cap_s=0.002)


async def wait_until(predicate: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


def downsampled(sink: StoreSink, buffer: AsyncBuffer, state: Path, clock: Clock, window_s: float,
                route: Route | None = None) -> SinkDispatcher:  # fmt: skip
    config = DownsampleConfig(window=window_s, stats=STATS, grace=0)  # type: ignore[arg-type]
    ds = Downsampler(config, DownsampleState(state), clock=clock)
    return SinkDispatcher(sink, buffer, backoff=fast(), route=route, downsampler=ds)


readings_st = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["pm2_5", "pm10"]),
        st.integers(0, 40 * S - 1),
        st.integers(-50, 50),
    ),
    min_size=1,
    max_size=60,
)


def expected_cursor(readings: Sequence[Reading], window_ns: int, now_ns: int) -> int:
    """Where the sink's cursor settles at ``now_ns``: before the first reading of a window still held."""
    held = [i for i, r in enumerate(readings, 1) if r.ts_ns - r.ts_ns % window_ns + 2 * window_ns > now_ns]
    return min(held) - 1 if held else len(readings)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=readings_st,
    window_s=st.sampled_from([1, 2, 5, 10]),
    phases=st.lists(st.tuples(st.integers(0, 50), st.integers(1, 6)), max_size=4),
)
def test_every_window_arrives_exactly_despite_crashes_at_any_moment(
    drawn: list[tuple[str, str, int, int]], window_s: int, phases: list[tuple[int, int]]
) -> None:
    """Each phase is a process: the clock moves on, the sink crashes after some sends (or the phase ends)."""
    readings = [Reading(ts_ns=T0 + dt, site="s", gateway="g", device=d, quantity=q, value=v, unit="ug/m3")
                for d, q, dt, v in drawn]  # fmt: skip
    clocks = sorted(T0 + seconds * S for seconds, _ in phases)

    async def run() -> tuple[dict[Key, float], int]:
        with tempfile.TemporaryDirectory() as tmp:
            buffer = await AsyncBuffer.open(Path(tmp) / "buffer.sqlite")
            try:
                await buffer.set_sinks(["portal"])
                await buffer.append(readings)
                store: dict[Key, float] = {}
                last = T0 + 100 * S  # every window closed and past correction: all must be sent
                for now, crash_after in [*zip(clocks, (c for _, c in phases), strict=True), (last, None)]:
                    sink = StoreSink("portal")
                    sink.points = store
                    sink.crash_after = crash_after
                    d = downsampled(sink, buffer, Path(tmp) / "ds.json", Clock(now), window_s)
                    task = asyncio.create_task(d.run())
                    settled = expected_cursor(readings, window_s * S, now)
                    async with asyncio.timeout(20):  # until the crash, or until the cursor settled
                        while not sink.crashed.is_set() and (await buffer.stats()).sinks["portal"].acked_id < settled:
                            await asyncio.sleep(0.002)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                return store, (await buffer.stats()).readings
            finally:
                await buffer.close()

    store, left = asyncio.run(run())
    assert store == reference(readings, window_s * S)  # every window, each with its exact statistics
    assert left == 0  # and once all were sent the raw readings left the buffer


async def test_the_raw_readings_of_an_open_window_stay_in_the_buffer_until_it_is_sent(tmp_path: Path) -> None:
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite")
    try:
        await buffer.set_sinks(["portal", "city"])
        clock = Clock(T0 + 5 * S)  # inside the window [T0, T0 + 10 s)
        first = [Reading(ts_ns=T0 + i * S, site="s", gateway="g", device="a", quantity="pm10", value=i, unit="ug/m3")
                 for i in range(5)]  # fmt: skip
        await buffer.append(first)
        sink = StoreSink("portal")
        d = downsampled(sink, buffer, tmp_path / "ds.json", clock, 10)
        task = asyncio.create_task(d.run())
        await wait_until(lambda: d.selected_total == 5)
        assert sink.points == {}  # the window is open
        stats = await buffer.stats()
        assert stats.sinks["portal"].acked_id == 0  # its raw readings are held for it
        task.cancel()  # a crash with the window open
        await asyncio.gather(task, return_exceptions=True)

        later = [first[0].with_changes(ts_ns=T0 + (5 + i) * S, value=10 + i) for i in range(5)]
        await buffer.append(later)
        clock.now = T0 + 10 * S  # the window closes
        sink = StoreSink("portal")
        d = downsampled(sink, buffer, tmp_path / "ds.json", clock, 10)
        task = asyncio.create_task(d.run())
        await wait_until(lambda: len(sink.points) == 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert sink.points == reference(first + later, 10 * S)  # nothing of the first half was lost
    finally:
        await buffer.close()


async def test_only_the_selected_readings_are_downsampled(tmp_path: Path) -> None:
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite")
    try:
        await buffer.set_sinks(["portal"])
        items = [Reading(ts_ns=T0 + i * S, site="s", gateway="g", device=dev, quantity="pm10", value=i, unit="ug/m3")
                 for i in range(10) for dev in ("a", "b")]  # fmt: skip
        await buffer.append(items)
        sink = StoreSink("portal")
        route = Route(RouteConfig(include=[Rule(device=["a"])]), {})
        d = downsampled(sink, buffer, tmp_path / "ds.json", Clock(T0 + 60 * S), 10, route)
        task = asyncio.create_task(d.run())
        await wait_until(lambda: (d.selected_total, d.filtered_total) == (10, 10) and len(sink.points) == 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert sink.points == reference([r for r in items if r.device == "a"], 10 * S)
    finally:
        await buffer.close()


def test_downsample_is_checked_at_load() -> None:
    text = '[[sinks]]\ntype = "local"\n[sinks.downsample]\nwindow = "15m"\nstats = ["mean", "median"]\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="gw.toml", env={})
    assert any(p.key_path.startswith("sinks[0].downsample.stats") for p in info.value.problems)
    cfg = parse_config('[[sinks]]\ntype = "local"\n[sinks.downsample]\nwindow = "15m"\n', env={})
    assert cfg.sinks[0].config.downsample == DownsampleConfig(window=900.0)


async def test_frames_are_downsampled_value_by_value(tmp_path: Path) -> None:
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite")
    try:
        await buffer.set_sinks(["portal"])
        fields = FrameFields.of(["pm10", "pm2_5", "temperature"], ["ug/m3", "ug/m3", "Cel"])
        frames = [Frame(T0 + i * S, "s", "g", "a", fields, (i, i / 2, 20.5 - i)) for i in range(12)]
        await buffer.append(frames)
        sink = StoreSink("portal")  # batch_size 5: batches end inside frames
        d = downsampled(sink, buffer, tmp_path / "ds.json", Clock(T0 + 60 * S), 10)
        task = asyncio.create_task(d.run())
        await wait_until(lambda: d.selected_total == 36 and len(sink.points) == 2 * 3 * len(STATS))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert sink.points == reference(as_readings(frames), 10 * S)
    finally:
        await buffer.close()
