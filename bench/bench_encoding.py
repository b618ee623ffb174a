"""Throughput of the wire encodings (readings per second), pure Python.

Run: /work/venv/bin/python bench/bench_encoding.py [--readings N]
Prints numbers; asserts nothing (speed is measured here, never in tests).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from gateway.encoding import LineProtocolEncoder, dumps_compact, group_for_senml, reading_json, senml_pack
from gateway.model import Quality, Reading


def make_batch(n: int) -> list[Reading]:
    """A realistic mix: 200 devices x 5 quantities, some tags, a few bools and bad-quality values."""
    quantities = [("temperature", "Cel"), ("relative_humidity", "%RH"), ("pm2_5", "ug/m3"),
                  ("active_power", "W"), ("occupancy", "/")]  # fmt: skip
    out = []
    t0 = 1_714_557_600_000_000_000
    for i in range(n):
        q, unit = quantities[i % 5]
        dev = f"meter-{(i // 5) % 200:03d}"
        value: float | int | bool = (i % 1000) / 10 if q != "occupancy" else bool(i % 2)
        tags = {"probe": "external"} if i % 7 == 0 else {}
        quality = Quality.UNCERTAIN if i % 50 == 0 else Quality.GOOD
        ts = t0 + (i // 1000) * 10_000_000_000
        out.append(Reading(ts, "city-lab", "gw-01", dev, q, value, unit, tags=tags, quality=quality))
    return out


def measure(name: str, batch: Sequence[Reading], fn: Callable[[Sequence[Reading]], object], repeat: int) -> None:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(batch)
        best = min(best, time.perf_counter() - start)
    print(f"{name:<32} {len(batch) / best:>12,.0f} readings/s  (best of {repeat}, {len(batch)} readings)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    batch = make_batch(args.readings)

    warm = LineProtocolEncoder()
    measure("line protocol (warm cache)", batch, warm.encode, args.repeat)
    measure("line protocol (cold cache)", batch, lambda b: LineProtocolEncoder().encode(b), args.repeat)
    measure("SenML packs (group + dumps)", batch,
            lambda b: [dumps_compact(senml_pack(g)) for g in group_for_senml(b)], args.repeat)  # fmt: skip
    measure("per-reading JSON", batch, lambda b: [reading_json(r) for r in b], args.repeat)


if __name__ == "__main__":
    main()
