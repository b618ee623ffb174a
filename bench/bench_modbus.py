"""Modbus driver benchmark: readings/s and polls/s against the TCP simulator with 100 devices,
requests per poll (coalesced vs one request per field), CPU and RSS of the driver process.

Run: /work/venv/bin/python bench/bench_modbus.py [--seconds 10] [--devices 100]
The simulator runs in a child process so the CPU/RSS figures are the driver's own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import socket
import subprocess
import sys
import time

from gateway.drivers.modbus.devices import load_profile_model
from gateway.drivers.modbus.planner import Span, plan_requests
from gateway.simulators.modbus.harness import running_driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def requests_per_poll() -> None:
    print("requests per poll (max_gap = 8):")
    print(f"  {'profile':<16} {'fields':>6} {'registers':>9} {'coalesced':>9} {'per field':>9}")
    for name in ("eastron-sdm630", "eastron-sdm120", "xy-md02"):
        _, profile = load_profile_model(name)
        spans = [Span(f.table, f.address, f.span) for f in profile.registers]
        plan = plan_requests(spans, max_registers=profile.max_registers_per_read or 125, max_gap=8)
        regs = sum(s.count for s in spans)
        print(f"  {name:<16} {len(spans):>6} {regs:>9} {len(plan):>9} {len(spans):>9}")


async def throughput(devices: int, seconds: float, interval: float, profile: str) -> None:
    port = _free_port()
    code = (
        "import argparse,sys; from gateway.simulators.modbus import cli; "
        "p=argparse.ArgumentParser(); cli.add_arguments(p); "
        "sys.exit(cli.main(p.parse_args(sys.argv[1:])))"
    )
    sim = subprocess.Popen(
        [sys.executable, "-c", code, "--profile", profile, "--units", f"1-{devices}", "--tcp", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # "modbus tcp on ..." once listening
        source = {
            "driver": "modbus", "name": "bench", "transport": "tcp", "host": "127.0.0.1", "port": port,
            "interval": interval, "timeout": 1.0,
            "devices": [{"name": f"m{u}", "unit_id": u, "profile": profile} for u in range(1, devices + 1)],
        }  # fmt: skip
        async with running_driver(source) as run:
            await run.wait_for(lambda: len(run.readings) > 0, timeout=10)
            assert run.driver.scheduler is not None
            stats = run.driver.scheduler.stats
            cpu0 = time.process_time()
            t0 = time.monotonic()
            r0, p0, q0, m0 = len(run.readings), stats.polls, stats.requests, stats.missed_ticks
            await asyncio.sleep(seconds)
            dt = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            readings, polls, reqs = len(run.readings) - r0, stats.polls - p0, stats.requests - q0
            missed = stats.missed_ticks - m0
    finally:
        sim.terminate()
        sim.wait(5)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    demand = devices / interval
    print(
        f"{devices} x {profile} on one TCP endpoint, interval {interval:g}s (demand {demand:.0f} polls/s), {dt:.1f}s:\n"
        f"  {readings / dt:,.0f} readings/s, {polls / dt:,.1f} polls/s, {reqs / dt:,.0f} requests/s, "
        f"{missed} missed ticks\n"
        f"  driver CPU {100 * cpu / dt:.0f}% of one core ({1e6 * cpu / max(reqs, 1):.0f} us/request), "
        f"max RSS {rss_mib:.0f} MiB"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--devices", type=int, default=100)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    requests_per_poll()
    print(f"python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}")
    asyncio.run(throughput(args.devices, args.seconds, 10.0, "eastron-sdm630"))  # a realistic load
    asyncio.run(throughput(args.devices, args.seconds, 0.5, "eastron-sdm630"))  # heavy but feasible
    asyncio.run(throughput(args.devices, args.seconds, 0.1, "eastron-sdm630"))  # beyond capacity: the ceiling
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
