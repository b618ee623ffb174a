"""Cost of per-sink routing (docs/routing.md). Prints numbers; asserts nothing.

    .venv/bin/python bench/bench_routing.py [--readings 100000] [--runs 2]

writer -> durable buffer -> dispatchers -> sinks that accept at once (so the figure is the
pipeline's, not a server's), 50 devices x 4 quantities with two tags each, sync=normal:
1. one sink, no rules;
2. three sinks, no rules (the cost of three cursors alone);
3. three routed sinks: the city's (no rules), an operator's (include one source's 10 devices,
   drop a tag), an open-data portal's (include pm*, keep two tags, position rounded to 2 decimals);
4. the same, the portal downsampled (15-minute means, gateway/downsample.py).
Readings/s = readings offered / time until every sink's cursor has passed all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_pipeline import cpu_s
from gateway.buffer import AsyncBuffer
from gateway.dispatch import SinkDispatcher
from gateway.downsample import DownsampleConfig, Downsampler, DownsampleState
from gateway.model import Reading
from gateway.routing import Position, Route, RouteConfig, Rule, Shape
from gateway.sink import SendResult, Sink, SinkConfig
from gateway.writer import BufferWriter

QUANTITIES = ("temperature", "relative_humidity", "pm2_5", "pm10")
UNITS = {"temperature": "Cel", "relative_humidity": "%RH", "pm2_5": "ug/m3", "pm10": "ug/m3"}
SOURCES = {"city": [f"dev-{i}" for i in range(40)], "operator": [f"dev-{i}" for i in range(40, 50)]}


class NullSink(Sink):
    config_model = SinkConfig

    def __init__(self, name: str) -> None:
        super().__init__(SinkConfig(type="null", name=name), site="bench", gateway="gw")

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        return SendResult.ok()


def make_readings(n: int, start_ns: int) -> list[Reading]:
    tags = [{"zone": "north", "lat": f"48.85{i:04d}", "lon": f"2.35{i:04d}"} for i in range(50)]
    return [
        Reading(ts_ns=start_ns + i * 1_000_000, site="bench", gateway="gw", device=f"dev-{i // 4 % 50}",
                quantity=(q := QUANTITIES[i % 4]), value=20.0 + (i % 100) / 10, unit=UNITS[q], tags=tags[i // 4 % 50])
        for i in range(n)
    ]  # fmt: skip


ROUTES = {
    "city": RouteConfig(),
    "operator": RouteConfig(include=[Rule(source=["operator"])], shape=Shape(drop_tags=["zone"])),
    "portal": RouteConfig(
        include=[Rule(quantity=["pm*"])],
        shape=Shape(keep_tags=["lat", "lon"], position=Position(decimals=2)),
    ),
}


async def run(
    state: Path, n: int, routes: dict[str, RouteConfig], downsample: str | None = None
) -> tuple[float, float]:
    tag = time.monotonic_ns()
    buffer = await AsyncBuffer.open(state / f"buffer-{tag}.sqlite", sync="normal")
    await buffer.set_sinks(list(routes))
    dispatchers = [
        SinkDispatcher(NullSink(name), buffer, route=Route(cfg, SOURCES), downsampler=(
            Downsampler(DownsampleConfig(window=900.0), DownsampleState(state / f"ds-{tag}.json"))
            if name == downsample else None))
        for name, cfg in routes.items()
    ]  # fmt: skip

    def notify() -> None:
        for d in dispatchers:
            d.notify()

    writer = BufferWriter(buffer, flush_interval_s=0.2, flush_max_readings=10_000, on_commit=notify)
    readings = make_readings(n, time.time_ns() - n * 1_000_000)
    tasks = [asyncio.create_task(writer.run()), *(asyncio.create_task(d.run()) for d in dispatchers)]
    c0, t0 = cpu_s(), time.perf_counter()
    chunk = 500
    for i in range(0, n, chunk * 20):
        await asyncio.gather(*(writer.emit(readings[j : j + chunk]) for j in range(i, min(n, i + chunk * 20), chunk)))
    while any(d.selected_total + d.filtered_total < n for d in dispatchers):
        await asyncio.sleep(0.01)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await buffer.close()
    return wall, cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    cases = {
        "1 sink, no rules": {"city": RouteConfig()},
        "3 sinks, no rules": {name: RouteConfig() for name in ROUTES},
        "3 routed sinks": ROUTES,
        "3 routed, 1 downsampled": ROUTES,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, routes in cases.items():
            for _ in range(args.runs):
                downsample = "portal" if "downsampled" in label else None
                wall, cpu = await run(Path(tmp), args.readings, routes, downsample)
                print(f"{label:<24} {args.readings / wall:>9,.0f} readings/s  "
                      f"{cpu / args.readings * 100_000:.2f} CPU s per 100k", flush=True)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
