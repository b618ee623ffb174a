"""Micro-benchmark of the source stages: Modbus decode (one poll) and the normaliser, in us of CPU per value.

No I/O: the bus answers every request at once with fixed words, so what is measured is the poller's decoding
and frame (or reading) building, then ``Normaliser.prepare``. Runs a few seconds. Works on older trees too
(their poller returns ``readings``), so before/after numbers come from the same script:

    .venv/bin/python bench/bench_frames_source.py            # this tree
    /work/main/.venv/bin/python bench/bench_frames_source.py # main, for the "before" column

Layouts (as bench_load's): ``channels``, blocks of 40 canonical quantities, each block tagged with its
channel (a frame per channel); ``tags``, one quantity and a tag per register (every value its own frame,
the worst case); ``shared``, the registers of one tag set (one frame per poll). uint16, scale 0.01.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.driver import DriverContext
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.devices import resolve_device
from gateway.drivers.modbus.poller import DevicePoller
from gateway.normalise import Normaliser
from gateway.quantities import QUANTITIES

CHANNEL_QUANTITIES = list(QUANTITIES)[:40]


class InstantBus:
    """Answers every read with the same fixed words (the decode stage alone, no protocol)."""

    def __init__(self) -> None:
        rnd = random.Random(1)
        self.words = [rnd.randrange(0, 40_000) for _ in range(125)]

    async def read(self, table: str, unit: int, address: int, count: int, **kw: Any) -> list[int]:
        return self.words[:count]


def write_profile(folder: Path, registers: int, layout: str) -> str:
    name = f"bench-frames-{layout}-{registers}"
    lines = [f'description = "bench_frames_source: {registers} x uint16, {layout}"\n']
    for i in range(registers):
        channel, q = divmod(i, len(CHANNEL_QUANTITIES))
        if layout == "channels":
            key = f'quantity = "{CHANNEL_QUANTITIES[q]}"\ntags = {{ ch = "c{channel:03d}" }}\n'
        elif layout == "tags":
            key = f'quantity = "temperature"\ntags = {{ ch = "c{i:03d}" }}\n'
        else:  # shared: no tag; a quantity repeats every 40 registers (the same series, as far as this stage cares)
            key = f'quantity = "{CHANNEL_QUANTITIES[q]}"\n'
        lines.append(f'[[registers]]\n{key}table = "holding"\naddress = {i}\ntype = "uint16"\nscale = 0.01\n')
    (folder / f"{name}.toml").write_text("\n".join(lines))
    return name


async def measure(profile: str, folder: Path, seconds: float) -> tuple[float, float, int]:
    cfg = ModbusSourceConfig.model_validate({
        "driver": "modbus", "name": "bench", "host": "127.0.0.1", "profile_dirs": [str(folder)],
        "devices": [{"name": "meter", "profile": profile}], "tags": {"site_zone": "a"},
    })  # fmt: skip
    ctx = DriverContext(site="s", gateway="g", source="bench", driver="modbus", logger=logging.getLogger("bench"))
    poller = DevicePoller(resolve_device(cfg.devices[0], cfg, 0), InstantBus(), ctx)  # type: ignore[arg-type]
    normaliser = Normaliser(driver="modbus", source="bench", source_tags=cfg.tags, metrics=None)
    decode_s = normalise_s = 0.0
    values = 0
    ts = time.time_ns() // 10**9 * 10**9
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(20):
            t0 = time.process_time()
            result = await poller.poll(ts)
            t1 = time.process_time()
            items = getattr(result, "frames", None)
            items = result.readings if items is None else items
            normaliser.prepare(items)
            t2 = time.process_time()
            decode_s += t1 - t0
            normalise_s += t2 - t1
            values += getattr(result, "values", None) or len(items)
            ts += 10**9
    return decode_s * 1e6 / values, normalise_s * 1e6 / values, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.5, help="per case")
    args = parser.parse_args()
    print(f"{'registers':>9} {'layout':>8} {'decode us/value':>16} {'normalise us/value':>19} {'total':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for registers in (100, 500):
            for layout in ("channels", "tags", "shared"):
                name = write_profile(folder, registers, layout)
                decode, normalise, _ = asyncio.run(measure(name, folder, args.seconds))
                print(f"{registers:>9} {layout:>8} {decode:>16.2f} {normalise:>19.2f} {decode + normalise:>7.2f}")


if __name__ == "__main__":
    main()
