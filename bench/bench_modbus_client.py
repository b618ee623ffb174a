"""CPU per Modbus TCP read request: pymodbus' async client vs ours (drivers/modbus/tcp_client.py), and Bus.

    python bench/bench_modbus_client.py [--connections 50] [--registers 100] [--requests 200] [--rounds 3]

One simulator process (``bench/load_sim.py``, one device per endpoint) serves N endpoints; this process
opens one connection to each and reads ``--registers`` holding registers ``--requests`` times on every
connection, all connections in parallel (as the daemon's bus schedulers do). Prints the CPU time of this
process (the client side only) per request and per register, for:

- pymodbus: ``AsyncModbusTcpClient.read_holding_registers`` (retries=0, as Bus configured it);
- ours: ``ModbusTcpClient.read``;
- Bus: ``Bus.read_block`` over ours (lock, retries loop, register checks: the poller's whole request path).

The three alternate in each round (a shared machine is noisy); the best and the median round are shown.
A few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from gateway.drivers.modbus.bus import Bus
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.tcp_client import ModbusTcpClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_load import write_profile  # noqa: E402

DEVICE = {"name": "d", "unit_id": 1, "registers": [{"quantity": "status", "address": 0}]}  # unused by Bus
Reader = Callable[[], Awaitable[object]]


async def measure(readers: list[Reader], requests: int) -> float:
    """CPU seconds per request with every reader running ``requests`` reads, all in parallel."""

    async def run(read: Reader) -> None:
        for _ in range(requests):
            await read()

    t0 = time.process_time()
    await asyncio.gather(*(run(r) for r in readers))
    return (time.process_time() - t0) / (requests * len(readers))


async def bench(ports: list[int], registers: int, requests: int, rounds: int) -> dict[str, list[float]]:
    pm = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=1, retries=0, reconnect_delay=0) for p in ports]
    ours = [ModbusTcpClient("127.0.0.1", p) for p in ports]
    line = {"driver": "modbus", "transport": "tcp", "host": "127.0.0.1", "devices": [DEVICE]}
    buses = [Bus(ModbusSourceConfig.model_validate({**line, "name": f"b{p}", "port": p})) for p in ports]
    for c in pm:
        await c.connect()
    for o in ours:
        await o.connect(1.0)
    for b in buses:
        await b.connect()
    kinds: dict[str, list[Reader]] = {
        "pymodbus": [partial(c.read_holding_registers, 0, count=registers, device_id=1) for c in pm],
        "ours": [partial(o.read, 1, 3, 0, registers, 1.0) for o in ours],
        "Bus": [partial(b.read_block, "holding", 1, 0, registers, timeout=1.0, retries=0) for b in buses],
    }
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for readers in kinds.values():  # warm up: first connections, caches
        await measure(readers, 5)
    for _ in range(rounds):
        for kind, readers in kinds.items():
            results[kind].append(await measure(readers, requests))
    for c in pm:
        c.close()
    for o in ours:
        o.close()
    for b in buses:
        b.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--registers", type=int, default=100)
    ap.add_argument("--requests", type=int, default=200, help="per connection per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profile = write_profile(Path(tmp), args.registers, "uint16")
        sim = subprocess.Popen(
            [sys.executable, str(HERE / "load_sim.py"), "--profile", profile, "--profile-dir", tmp,
             "--endpoints", str(args.connections)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sim.stdout is not None
            ports = [int(p) for p in sim.stdout.readline().split()[1].split(",")]
            results = asyncio.run(bench(ports, args.registers, args.requests, args.rounds))
        finally:
            sim.terminate()
            sim.wait()
    print(
        f"{args.connections} connections in parallel, {args.registers} holding registers per read, "
        f"{args.requests} reads per connection per round, {args.rounds} rounds; CPU of the client process"
    )
    print(f"{'client':<10} {'us/request best':>16} {'median':>8} {'us/register':>12}")
    for kind, per_request in results.items():
        best, median = min(per_request) * 1e6, statistics.median(per_request) * 1e6
        print(f"{kind:<10} {best:16.1f} {median:8.1f} {median / args.registers:12.3f}")


if __name__ == "__main__":
    main()
