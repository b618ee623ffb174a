"""``gateway sim serial``: a simulated serial sensor on a pty, behind a stable symlink."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .devices import DEVICES
from .pty import Faults, PtySimulator

EPILOG = """\
examples:
  gateway sim serial --device sds011 --link /tmp/ttySDS
  gateway sim serial --device nmea --link /tmp/ttyGPS --rate 1 --noise 0.1 --bad-checksum 0.05
  gateway sim serial --device sds011 --link /tmp/ttySDS --unplug-every 30 --unplug-for 5

then point a [[sources]] entry with driver = "serial" at port = "/tmp/ttySDS".
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Simulate a serial sensor on a pty pair (SDS011, PMS5003, NMEA GPS, text lines)."
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--device", choices=DEVICES, required=True, help="what the simulated sensor speaks")
    parser.add_argument("--link", type=Path, required=True, help="symlink to create to the pty slave")
    parser.add_argument("--rate", type=float, default=1.0, help="frames per second (default 1)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many frames (default: run forever)")
    parser.add_argument("--noise", type=float, default=0.0, help="probability of a noise burst before a frame")
    parser.add_argument("--bad-checksum", type=float, default=0.0, help="probability of a corrupted frame")
    parser.add_argument("--truncate", type=float, default=0.0, help="probability of a truncated frame")
    parser.add_argument("--silence-every", type=float, default=0.0, help="go quiet every N seconds")
    parser.add_argument("--silence-for", type=float, default=5.0, help="... for this long")
    parser.add_argument("--unplug-every", type=float, default=0.0, help="unplug the pty every N seconds")
    parser.add_argument("--unplug-for", type=float, default=5.0, help="... for this long, then recreate it")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the faults")


def main(args: argparse.Namespace) -> int:
    for name in ("noise", "bad_checksum", "truncate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"--{name.replace('_', '-')} must be a probability between 0 and 1", file=sys.stderr)
            return 2
    if args.rate <= 0:
        print("--rate must be positive", file=sys.stderr)
        return 2
    sim = PtySimulator(
        device=args.device,
        link=args.link,
        rate_hz=args.rate,
        faults=Faults(noise=args.noise, bad_checksum=args.bad_checksum, truncate=args.truncate),
        seed=args.seed,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(sim, args))
    return 0


async def _run(sim: PtySimulator, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    print(f"simulating {args.device} on {args.link} at {args.rate:g} frame/s; Ctrl-C to stop", flush=True)
    chores = [asyncio.create_task(_cycle(sim.silence, args.silence_every, args.silence_for, "silent"))]
    chores.append(asyncio.create_task(_unplug_cycle(sim, args.unplug_every, args.unplug_for)))
    if args.count:
        chores.append(asyncio.create_task(_stop_after(sim, args.count, stop)))
    try:
        await stop.wait()
    finally:
        for task in chores:
            task.cancel()
        await sim.stop()
        print(f"sent {len(sim.sent)} frames ({sum(f.valid for f in sim.sent)} valid)", flush=True)


async def _cycle(toggle: Callable[[bool], None], every: float, duration: float, what: str) -> None:
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        print(what, flush=True)
        toggle(True)
        await asyncio.sleep(duration)
        toggle(False)


async def _unplug_cycle(sim: PtySimulator, every: float, duration: float) -> None:
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        print("unplugged", flush=True)
        sim.unplug()
        await asyncio.sleep(duration)
        sim.replug()
        print("plugged in again", flush=True)


async def _stop_after(sim: PtySimulator, count: int, stop: asyncio.Event) -> None:
    while len(sim.sent) < count:
        await asyncio.sleep(0.05)
    stop.set()


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m gateway.simulators.serial.cli")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
