"""One simulator process of bench_load.py: our Modbus TCP simulator serving one device on each of N endpoints.

    python bench/load_sim.py --profile NAME --profile-dir DIR --endpoints N

Prints ``ports P1,P2,...`` once every endpoint listens and serves until SIGTERM. Every endpoint
serves unit 1 with the profile's registers.

Why a cached snapshot: ``SimulatedDevice.snapshot`` recomputes every field of the profile on
each read, and a 500-register device read in 4 requests of 125 costs 2,000 field encodings per
poll; at 100 devices polled every second one process would spend more CPU than the daemon under
test. The values still move: the cache lives for 100 ms, shorter than any poll interval here,
so every poll sees fresh values, as from a real meter.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.drivers.modbus.devices import load_profile_model
from gateway.simulators.modbus.device import SimulatedDevice
from gateway.simulators.modbus.server import ModbusSimulator

CACHE_S = 0.1


@dataclass
class CachedDevice(SimulatedDevice):
    """A simulated device whose register snapshot is recomputed at most every ``CACHE_S``."""

    _cache: dict[str, tuple[int, Mapping[int, int]]] = field(default_factory=dict, init=False, repr=False)

    def snapshot(self, table: str) -> Mapping[int, int]:
        slot = int(time.monotonic() / CACHE_S)
        hit = self._cache.get(table)
        if hit is None or hit[0] != slot:
            hit = (slot, super().snapshot(table))
            self._cache[table] = hit
        return hit[1]


async def serve(profile: str, profile_dir: Path, endpoints: int) -> None:
    _path, model = load_profile_model(profile, [profile_dir])
    # One device object behind every endpoint: the endpoints read the same snapshot, so the
    # simulator's cost grows with requests, not with endpoints x registers.
    device = CachedDevice(1, list(model.registers))
    sim = ModbusSimulator({1: device})
    ports = [await sim.serve_tcp("127.0.0.1", 0) for _ in range(endpoints)]
    print("ports " + ",".join(map(str, ports)), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--profile-dir", type=Path, required=True)
    ap.add_argument("--endpoints", type=int, required=True)
    args = ap.parse_args()
    asyncio.run(serve(args.profile, args.profile_dir, args.endpoints))


if __name__ == "__main__":
    main()
