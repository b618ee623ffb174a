"""``gateway sim loramodem``: an RN2483 or RAK3172 emulator on a pty, receiving simulated packets."""

from __future__ import annotations

import argparse
import asyncio

from gateway.simulators.loramodem.emulator import EMULATORS, ModemEmulator
from gateway.simulators.lorawan.payloads import ENCODERS

EPILOG = """example:
  gateway sim loramodem --model rak3172 --codec cayenne_lpp --rate 0.5
  # prints the pty path, e.g. /dev/pts/7; point a loramodem source's `port` at it
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--model", choices=sorted(EMULATORS), default="rn2483")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="cayenne_lpp", help="payload format sent")
    parser.add_argument("--rate", type=float, default=1.0, help="packets per second")
    parser.add_argument("--count", type=int, default=0, help="stop after this many packets (0 = forever)")
    parser.add_argument("--rssi", type=int, default=-70)
    parser.add_argument("--snr", type=int, default=8)


async def play(emulator: ModemEmulator, *, codec: str, rate: float, count: int, rssi: int, snr: int) -> int:
    """Inject a packet every 1/rate seconds; returns how many were delivered."""
    encode = ENCODERS[codec][0]
    seq = 0
    while not count or seq < count:
        await asyncio.sleep(1 / rate)
        emulator.inject(encode(seq), rssi=rssi, snr=snr)
        seq += 1
    return emulator.stats.delivered


def main(args: argparse.Namespace) -> int:
    async def run() -> int:
        emulator = EMULATORS[args.model]()
        emulator.start()
        print(f"{args.model} emulator on {emulator.path}", flush=True)
        try:
            delivered = await play(
                emulator, codec=args.codec, rate=args.rate, count=args.count, rssi=args.rssi, snr=args.snr
            )
        finally:
            emulator.close()
        print(f"delivered {delivered} packets, {emulator.stats.missed} missed (reception not armed)")
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
