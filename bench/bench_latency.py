"""Light-load latency from a poll to a sink, through the real writer, durable buffer and dispatcher.

    .venv/bin/python bench/bench_latency.py [--polls-per-s 10] [--values 50] [--seconds 10] [--sync full]

A producer hands over ``--values`` readings ``--polls-per-s`` times a second (as a Modbus bus with that many
devices polled every second does: ``emit(..., wait_commit=False)``); a sink that accepts at once records when
each reading arrives. Prints p50/p99/max of (arrival - reading timestamp) and the commit count. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.buffer import AsyncBuffer
from gateway.dispatch import SinkDispatcher
from gateway.metrics import Metrics
from gateway.model import Reading
from gateway.sink import Outcome, SendResult, Sink, SinkConfig
from gateway.writer import BufferWriter


class RecordingSink(Sink):
    config_model = SinkConfig

    def __init__(self) -> None:
        super().__init__(SinkConfig(type="recording", name="rec", batch_size=5000), site="s", gateway="g")
        self.latencies_s: list[float] = []

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        now = time.time_ns()
        self.latencies_s.extend((now - r.ts_ns) / 1e9 for r in batch)
        return SendResult(Outcome.ACCEPTED)


async def run(polls_per_s: float, values: int, seconds: float, sync: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        buffer = await AsyncBuffer.open(Path(tmp) / "b.sqlite", max_bytes=10**9, overflow="drop_oldest", sync=sync)
        await buffer.set_sinks(["rec"])
        metrics = Metrics()
        sink = RecordingSink()
        dispatcher = SinkDispatcher(sink, buffer, metrics=metrics)
        writer = BufferWriter(
            buffer, flush_interval_s=0.2, flush_max_readings=10_000, metrics=metrics, on_commit=dispatcher.notify
        )
        tasks = [asyncio.create_task(writer.run()), asyncio.create_task(dispatcher.run())]
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ts = time.time_ns()
            batch = [Reading(ts, "s", "g", f"dev{n % 100}", f"q{i}", float(i), "W") for i in range(values)]
            await writer.emit(batch, wait_commit=False)
            n += 1
            await asyncio.sleep(1 / polls_per_s)
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await buffer.close()
    lat = sorted(sink.latencies_s)
    commits = metrics.registry.get_sample_value("gateway_buffer_commit_duration_seconds_count") or 0
    print(
        f"{polls_per_s:g} polls/s x {values} values, sync={sync}: {len(lat)} readings, {commits:.0f} commits; "
        f"latency p50 {statistics.median(lat) * 1e3:.1f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.1f} ms, "
        f"max {lat[-1] * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls-per-s", type=float, default=10.0)
    parser.add_argument("--values", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sync", choices=["full", "normal"], default="full")
    args = parser.parse_args()
    asyncio.run(run(args.polls_per_s, args.values, args.seconds, args.sync))


if __name__ == "__main__":
    main()
