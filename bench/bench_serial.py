"""Serial decoders and driver: frames/s per decoder, and CPU of a 1 Hz sensor over an hour.

Run: /work/venv/bin/python bench/bench_serial.py [--seconds 20]

1. Decoder throughput: a long stream of frames (with 10 % noise) is fed in
   64-byte chunks, as a UART read would deliver it; prints frames/s.
2. Driver CPU: the simulator runs in a separate process (``gateway sim serial``)
   at 1 frame/s; this process runs the driver against its pty for --seconds and
   measures its own CPU time, then extrapolates to an hour. Includes the idle
   wake-ups (partial-frame and silence checks) but not the durable buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gateway.drivers.serial.config import SerialSourceConfig, resolve
from gateway.drivers.serial.driver import SerialDriver
from gateway.drivers.serial.stream import StreamDecoder
from gateway.simulators.serial.devices import BINARY, make_frame

from gateway.driver import DriverContext
from gateway.model import Reading

PROFILES = {
    "sds011": "sds011",
    "pms5003": "pms5003",
    "nmea": "nmea-gps",
    "kv": "maker-climate-kv",
    "csv": "maker-climate-csv",
    "json": "maker-climate-json",
}


def _stream(device: str, frames: int) -> bytes:
    rng = random.Random(1)
    sync = BINARY.get(device, b"\n")[0]
    parts = []
    for n in range(frames):
        if rng.random() < 0.1:
            noise = bytes(b for b in rng.randbytes(8) if b != sync)
            parts.append(noise if device in BINARY else noise.replace(b"$", b"") + b"\n")
        parts.append(make_frame(device, n).data)
    return b"".join(parts)


def bench_decoders(frames: int = 20_000) -> None:
    print(f"decoder throughput ({frames} frames, 10 % noise bursts, 64-byte reads)")
    for device, profile in PROFILES.items():
        cfg = SerialSourceConfig(driver="serial", name="b", port="/dev/null", profile=profile)
        decoder_cfg, _ = resolve(cfg)
        stream = _stream(device, frames)
        chunks = [stream[i : i + 64] for i in range(0, len(stream), 64)]
        dec = StreamDecoder(decoder_cfg)
        start = time.perf_counter()
        decoded = sum(len(dec.feed(chunk, 0.0).frames) for chunk in chunks)
        elapsed = time.perf_counter() - start
        # NMEA sends GGA + RMC per simulated frame: both are decoded frames.
        print(f"  {device:8s} {decoded / elapsed:>10,.0f} frames/s  ({len(stream) / elapsed / 1e6:.1f} MB/s)")


async def bench_driver_cpu(seconds: float, device: str = "sds011") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "ttyBENCH"
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.simulators.serial.cli",
                "--device",
                device,
                "--link",
                str(link),
                "--rate",
                "1",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            while not link.exists():
                await asyncio.sleep(0.05)
            cfg = SerialSourceConfig(driver="serial", name="bench", port=str(link), profile=PROFILES[device])
            ctx = DriverContext(site="s", gateway="g", source="bench", driver="serial", logger=logging.getLogger("b"))
            driver = SerialDriver(cfg, ctx)
            got: list[Reading] = []

            async def emit(readings: Sequence[Reading]) -> None:
                got.extend(readings)

            task = asyncio.create_task(driver.run(emit))
            await asyncio.sleep(1.5)  # open the port, first frame
            cpu0, wall0, n0 = time.process_time(), time.monotonic(), len(got)
            await asyncio.sleep(seconds)
            cpu, wall, n = time.process_time() - cpu0, time.monotonic() - wall0, len(got) - n0
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            sim.terminate()
            sim.wait()
    per_hour = cpu / wall * 3600
    print(
        f"driver CPU, {device} at 1 frame/s: {cpu * 1000:.1f} ms CPU over {wall:.1f} s ({n} readings) "
        f"-> {per_hour:.2f} s CPU per hour ({per_hour / 36:.3f} % of one core)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="driver CPU measurement length")
    parser.add_argument("--frames", type=int, default=20_000)
    args = parser.parse_args()
    bench_decoders(args.frames)
    asyncio.run(bench_driver_cpu(args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
