"""``gateway sim modbus``: serve device profiles over TCP, RTU over TCP and/or a pty, with fault knobs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from gateway.drivers.modbus.devices import DeviceSetupError
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.server import ModbusSimulator

EPILOG = """\
examples:
  gateway sim modbus --profile eastron-sdm630 --tcp 127.0.0.1:5020
  gateway sim modbus --device 1:eastron-sdm630 --device 7:xy-md02 --pty --link /tmp/ttyMODBUS
  gateway sim modbus --profile xy-md02 --units 1-30 --rtu-over-tcp 127.0.0.1:4001 --timeout-rate 0.05 --delay 0.02
  gateway sim modbus --device 1:xy-md02 --tcp 127.0.0.1:5020 --unknown-units-exception 11   # a TCP-RTU gateway
"""


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--profile", help="profile served by every unit in --units")
    parser.add_argument("--units", default="1", help="unit ids for --profile, e.g. 1 or 1-30 (default 1)")
    parser.add_argument("--device", action="append", default=[], metavar="UNIT:PROFILE", help="add one unit")
    parser.add_argument("--tcp", type=_host_port, metavar="HOST:PORT", help="serve Modbus TCP")
    parser.add_argument("--rtu-over-tcp", type=_host_port, metavar="HOST:PORT", help="serve RTU frames on TCP")
    parser.add_argument("--pty", action="store_true", help="serve RTU on a pty pair; prints the port to open")
    parser.add_argument("--link", type=Path, help="with --pty: also make this symlink to the port")
    parser.add_argument("--strict-addresses", action="store_true", help="unmapped registers answer exception 2")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share of requests left unanswered")
    parser.add_argument("--busy-rate", type=float, default=0.0, help="share answered 'device busy' (code 6)")
    parser.add_argument("--corrupt-rate", type=float, default=0.0, help="share answered with a broken CRC")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--exception", type=int, help="answer every request with this exception code")
    parser.add_argument("--silent-units", default="", help="units that never answer, e.g. 3,5")
    parser.add_argument(
        "--unknown-units-exception",
        type=int,
        metavar="CODE",
        help="answer every unit id without a device with this exception (4 = a server answering for everyone, "
        "10/11 = a TCP-to-RTU gateway) instead of silence",
    )
    parser.add_argument("--seed", type=int, help="random seed for the fault rates")


def build(args: argparse.Namespace) -> ModbusSimulator:
    from gateway.drivers.modbus.cli import parse_units

    units: dict[int, str] = {}
    if args.profile:
        units.update({u: args.profile for u in parse_units(args.units)})
    for item in args.device:
        unit, _, profile = item.partition(":")
        if not unit.isdigit() or not profile:
            raise SystemExit(f"--device expects UNIT:PROFILE, got {item!r}")
        units[int(unit)] = profile
    if not units:
        raise SystemExit("give --profile (with --units) or --device UNIT:PROFILE")
    try:
        sim = ModbusSimulator(
            devices_from_profiles(units, strict_addresses=args.strict_addresses),
            seed=args.seed,
            unknown_unit_exception=args.unknown_units_exception,
        )
    except DeviceSetupError as exc:
        raise SystemExit(f"error: {exc}") from exc
    silent = set(parse_units(args.silent_units)) if args.silent_units else set()
    for unit in units:
        f = sim.fault(unit)
        f.timeout_rate, f.busy_rate, f.corrupt_rate = args.timeout_rate, args.busy_rate, args.corrupt_rate
        f.delay_s, f.exception, f.silent = args.delay, args.exception, unit in silent
    return sim


async def serve(args: argparse.Namespace) -> int:
    sim = build(args)
    if not (args.tcp or args.rtu_over_tcp or args.pty):
        raise SystemExit("give at least one of --tcp, --rtu-over-tcp, --pty")
    units = ", ".join(f"{u}" for u in sorted(sim.devices))
    for option, endpoint, rtu_framing in (("--tcp", args.tcp, False), ("--rtu-over-tcp", args.rtu_over_tcp, True)):
        if not endpoint:
            continue
        try:
            port = await sim.serve_tcp(endpoint[0], endpoint[1], rtu_framing=rtu_framing)
        except OSError as exc:
            await sim.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            print(f"error: cannot listen on {endpoint[0]}:{endpoint[1]}: {reason}; another program "
                  f"holds the port (ss -ltnp 'sport = :{endpoint[1]}') or pick another {option} port, "
                  f"e.g. {option} {endpoint[0]}:0 for a free one", file=sys.stderr)  # fmt: skip
            return 1
        print(f"modbus {option[2:]} on {endpoint[0]}:{port}, units {units}", flush=True)
    if args.pty:
        path = await sim.serve_pty()
        if args.link:
            with contextlib.suppress(FileNotFoundError):
                args.link.unlink()
            os.symlink(path, args.link)
            path = f"{args.link} -> {path}"
        print(f"modbus rtu on {path}, units {units}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.close()
    print(f"served {sim.stats.requests} requests", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(serve(args))
