"""CPU per value to encode wide frames: SenML packs and line protocol, per reading (before) and per frame (after).

Run: .venv/bin/python bench/bench_frame_encoding.py [--devices 100] [--repeat 5]
A few seconds; prints microseconds per value (best of --repeat), asserts nothing.
The frames look like a Modbus poll: 100 meters, one tag set each, scaled register
values (x 0.1, so most of them print with many digits, as real ones do).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from types import MappingProxyType

from gateway.encoding import LineProtocolEncoder, dumps_compact, group_for_senml, senml_pack
from gateway.frame import Frame, FrameFields, as_readings
from gateway.frame_encoding import FrameLineProtocolEncoder, SenMLFrameEncoder
from gateway.model import Reading

T0 = 1_714_557_600_000_000_000


def make_frames(devices: int, width: int) -> list[Frame]:
    fields = FrameFields.of([f"register_{i}" for i in range(width)], ["V" if i % 3 else "A" for i in range(width)])
    return [
        Frame(T0, "city-lab", "gw-01", f"meter-{d:03d}", fields,
              tuple((d * 7 + i * 37) % 2500 * 0.1 if i % 4 else (d + i) % 1000 for i in range(width)),
              MappingProxyType({"bus": "rs485-1", "building": "b7"}))
        for d in range(devices)
    ]  # fmt: skip


def make_split_frames(devices: int, width: int) -> list[Frame]:
    """The same poll with a tag per register (as bench_load.py's profile has): one frame per value."""
    fields = FrameFields.of(["temperature"], ["Cel"])
    tags = [MappingProxyType({"ch": f"c{i:03d}"}) for i in range(width)]
    return [Frame(T0, "city-lab", "gw-01", f"meter-{d:03d}", fields, ((d * 7 + i * 37) % 2500 * 0.1,), tags[i])
            for d in range(devices) for i in range(width)]  # fmt: skip


def best_us_per_value(fn: Callable[[], object], values: int, repeat: int) -> float:
    fn()  # warm caches (templates, prefixes), as a running sink has them
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best / values * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'encoding':<20} {'width':>5} {'per reading':>12} {'per frame':>10}  (us CPU per value)")
    for width in (100, 500):
        report(make_frames(args.devices, width), f"{width}", args.repeat)
    print("A tag per register: the poll is one frame per value (still one SenML pack per device)")
    report(make_split_frames(args.devices, 100), "1x100", args.repeat)


def report(frames: list[Frame], width: str, repeat: int) -> None:
    readings: list[Reading] = as_readings(frames)
    n = len(readings)
    senml = SenMLFrameEncoder()
    lp_old, lp_new = LineProtocolEncoder(), FrameLineProtocolEncoder()
    rows = [
        ("SenML", lambda: [dumps_compact(senml_pack(g)) for g in group_for_senml(readings)],
         lambda: senml.packs(frames)),
        ("line protocol", lambda: lp_old.encode(readings), lambda: lp_new.encode_frames(frames)),
    ]  # fmt: skip
    for name, before, after in rows:
        print(f"{name:<20} {width:>5} {best_us_per_value(before, n, repeat):>12.2f}"
              f" {best_us_per_value(after, n, repeat):>10.2f}")  # fmt: skip
    expand = best_us_per_value(lambda: as_readings(frames), n, repeat)
    print(f"{'(frames -> readings)':<20} {width:>5} {expand:>12.2f}   the per-reading path pays this too (take)")
    value_reprs = best_us_per_value(lambda: [",".join(map(repr, map(float, f.values))) for f in frames], n, repeat)
    print(f"{'(repr of the values)':<20} {width:>5} {value_reprs:>12.2f}   the floor of an exact float text")


if __name__ == "__main__":
    main()
