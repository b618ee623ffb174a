"""CPU per value and size ratio of the influxdb sink's gzip: the standard library's zlib and zlib-ng, by level.

Run: .venv/bin/python bench/bench_gzip.py [--values 5000] [--repeat 15]
A few seconds; prints microseconds of CPU per value (best of --repeat) and the compression ratio of one
request body, asserts nothing. The body is what the sink sends at bench_load.py's 100 x 500: line protocol
of Modbus polls (channels of 40 quantities tagged ``ch``, register values / 100), one batch of --values.
"""

from __future__ import annotations

import argparse
import gzip
import random
import time
from collections.abc import Callable
from types import MappingProxyType

from gateway.frame import Frame, FrameFields, float_array
from gateway.frame_encoding import FrameLineProtocolEncoder
from gateway.quantities import QUANTITIES

T0 = 1_764_354_000_000_000_000
WIDTH = 40


def body(values: int) -> bytes:
    rng = random.Random(1)
    quantities = sorted(QUANTITIES)[:WIDTH]
    fields = FrameFields.of(quantities, [QUANTITIES[q].unit for q in quantities])
    frames = [
        Frame(T0, "bench", "gw", f"dev{f // 13:03d}", fields,
              float_array([rng.randint(0, 65535) / 100 for _ in range(WIDTH)]),
              MappingProxyType({"ch": f"c{f % 13:03d}"}))
        for f in range(max(1, values // WIDTH))
    ]  # fmt: skip
    return FrameLineProtocolEncoder().encode_frames(frames)


def best_of(fn: Callable[[], bytes], repeat: int) -> tuple[float, bytes]:
    best, out = float("inf"), b""
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=5000, help="values in the body (the sink's default batch)")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    data = body(args.values)
    n = len(data.splitlines())
    print(f"body: {n} values, {len(data)} bytes ({len(data) / n:.0f} a value)")
    candidates: list[tuple[str, Callable[[], bytes]]] = [
        (f"zlib {level}", lambda level=level: gzip.compress(data, level))
        for level in (1, 2, 6, 9)  # type: ignore[misc]
    ]
    try:
        from zlib_ng import gzip_ng

        candidates += [
            (f"zlib-ng {level}", lambda level=level: gzip_ng.compress(data, level))  # type: ignore[misc]
            for level in (1, 2, 3, 6, 9)
        ]
    except ImportError:
        print("zlib-ng is not installed here: the standard library's zlib only")
    print(f"{'library level':16s} {'us/value':>9s} {'ratio':>6s}")
    for name, fn in candidates:
        seconds, out = best_of(fn, args.repeat)
        assert gzip.decompress(out) == data
        print(f"{name:16s} {seconds / n * 1e6:9.3f} {len(data) / len(out):6.2f}")


if __name__ == "__main__":
    main()
