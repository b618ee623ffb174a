"""Field tools: ``gateway probe`` (read one device once) and ``gateway scan`` (find unit ids)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any, TextIO

from gateway.driver import DriverContext
from gateway.drivers.modbus.bus import Bus, BusUnavailable
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.devices import DeviceSetupError, resolve_device
from gateway.drivers.modbus.driver import quiet_pymodbus
from gateway.drivers.modbus.poller import DevicePoller, FieldResult
from gateway.drivers.modbus.scan import Answer, Progress, peer_problem, scan_units

PROBE_EPILOG = """\
examples:
  gateway probe --config /etc/gateway/gateway.toml --source rs485-1 --device meter-1
  gateway probe --rtu /dev/ttyUSB0 --baud 9600 --unit 1 --profile eastron-sdm630
  gateway probe --tcp 192.168.1.50:502 --unit 3 --profile xy-md02
"""

SCAN_EPILOG = """\
examples:
  gateway scan --rtu /dev/ttyUSB0 --baud 9600 --units 1-247 --timeout 0.2
  gateway scan --tcp 192.168.1.50:502 --units 1-10 --emit-config --profile eastron-sdm630 > modbus.toml
"""

NO_ANSWER_HELP = """\
What to try next:
  * serial line: check A/B (D+/D-) are not swapped, the adapter is the right port, and the
    baud rate / parity match the device (--baud, --parity; Eastron SDM120 ships at 2400 8N1);
  * run `gateway scan` on the same line to see which unit ids answer;
  * TCP: check the address and port (502), and that no other master holds the only connection;
  * a slow device: raise --timeout."""


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_units(text: str) -> list[int]:
    """'1-5,9,20-22' -> [1, 2, 3, 4, 5, 9, 20, 21, 22]."""
    units: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected unit ids like 1-247 or 1,5,7; got {text!r}") from None
        if not 0 <= a <= b <= 255:
            raise argparse.ArgumentTypeError(f"unit ids must be 0..255 in increasing ranges; got {part!r}")
        units.extend(range(a, b + 1))
    return sorted(set(units))


def _add_line_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tcp", type=_host_port, metavar="HOST:PORT", help="Modbus TCP endpoint")
    g.add_argument("--rtu-over-tcp", type=_host_port, metavar="HOST:PORT", help="raw serial server (RTU frames on TCP)")
    g.add_argument("--rtu", metavar="PORT", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=9600, help="serial baud rate (default 9600)")
    p.add_argument("--parity", choices=("N", "E", "O"), default="N")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per request")


def _line_config(args: argparse.Namespace, devices: list[dict[str, Any]]) -> ModbusSourceConfig:
    raw: dict[str, Any] = {"driver": "modbus", "name": "cli", "timeout": args.timeout, "devices": devices}
    if args.tcp:
        raw.update(transport="tcp", host=args.tcp[0], port=args.tcp[1])
    elif args.rtu_over_tcp:
        raw.update(transport="rtu_over_tcp", host=args.rtu_over_tcp[0], port=args.rtu_over_tcp[1])
    elif args.rtu:
        raw.update(transport="rtu", port=args.rtu, baudrate=args.baud, parity=args.parity, stopbits=args.stopbits)
    else:
        raise SystemExit("give --config with --source and --device, or one of --tcp, --rtu-over-tcp, --rtu")
    return ModbusSourceConfig.model_validate(raw)


# --- probe --------------------------------------------------------------------


def _probe_target(args: argparse.Namespace) -> tuple[ModbusSourceConfig, int]:
    if args.config:
        from gateway.config import load_config

        if not (args.source and args.device):
            raise SystemExit("--config needs --source NAME and --device NAME")
        cfg = load_config(args.config)
        for loaded in cfg.sources:
            if loaded.config.name == args.source:
                if not isinstance(loaded.config, ModbusSourceConfig):
                    raise SystemExit(f"source {args.source!r} is not a modbus source")
                names = [d.name for d in loaded.config.devices]
                if args.device not in names:
                    raise SystemExit(
                        f"source {args.source!r} has no device {args.device!r}; devices: {', '.join(names)}"
                    )
                return loaded.config, names.index(args.device)
        raise SystemExit(f"no source named {args.source!r} in {args.config}")
    if not args.profile:
        raise SystemExit("give --profile NAME (see config/profiles/) with --tcp/--rtu/--rtu-over-tcp")
    device = {"name": f"unit-{args.unit}", "unit_id": args.unit, "profile": args.profile}
    return _line_config(args, [device]), 0


def format_table(rows: list[FieldResult]) -> str:
    header = ("quantity", "where", "raw (hex)", "value", "unit", "status")
    lines = [header]
    for r in rows:
        s = r.spec
        raw = (
            "-"
            if r.raw is None
            else " ".join(f"{int(w):04X}" if s.table in ("holding", "input") else str(int(w)) for w in r.raw)
        )
        value = "-" if r.value is None else (f"{r.value:.6g}" if isinstance(r.value, float) else str(r.value))
        lines.append((s.label, f"{s.table}:{s.address}", raw, value, r.unit or (s.unit or ""), r.status))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines)


async def probe_async(args: argparse.Namespace, out: TextIO) -> int:
    quiet_pymodbus()
    cfg, index = _probe_target(args)
    try:
        device = resolve_device(cfg.devices[index], cfg, index)
    except DeviceSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ctx = DriverContext(
        site="probe", gateway="probe", source=cfg.name, driver="modbus", logger=logging.getLogger("probe")
    )
    bus = Bus(cfg)
    try:
        await bus.connect()
        result = await DevicePoller(device, bus, ctx).poll(time.time_ns(), detail=True)
    except BusUnavailable as exc:
        print(f"error: {exc}\n{NO_ANSWER_HELP}", file=sys.stderr)
        return 2
    finally:
        bus.close()
    print(f"{device.name} (unit {device.unit_id}) on {cfg.endpoint}: {result.requests} request(s)", file=out)
    print(format_table(result.fields), file=out)
    if not result.answered:
        print(f"\nerror: unit {device.unit_id} does not answer ({result.failure})\n{NO_ANSWER_HELP}", file=sys.stderr)
        return 2
    return 0 if all(f.status == "ok" for f in result.fields) else 1


def probe(args: argparse.Namespace) -> int:
    return asyncio.run(probe_async(args, sys.stdout))


# --- scan ---------------------------------------------------------------------


def emit_config(cfg: ModbusSourceConfig, found: dict[int, Answer], profile: str | None) -> str:
    lines = ["[[sources]]", 'driver = "modbus"', 'name = "modbus-1"', f'transport = "{cfg.transport}"']
    if cfg.transport == "rtu":
        lines += [f'port = "{cfg.serial_port}"', f"baudrate = {cfg.baudrate}", f'parity = "{cfg.parity}"']
        lines += [f"stopbits = {cfg.stopbits}"]
    else:
        lines += [f'host = "{cfg.host}"', f"port = {cfg.port}"]
    # a scan uses a short timeout to be quick; polling wants a forgiving one
    lines += ['interval = "10s"', f'timeout = "{max(cfg.timeout, 1.0):g}s"']
    for unit in found:
        lines += ["", "[[sources.devices]]", f'name = "unit-{unit}"', f"unit_id = {unit}"]
        if profile:
            lines.append(f'profile = "{profile}"')
        else:
            lines += [
                "# replace with the device's profile (gateway profiles in config/profiles/), e.g.",
                '# profile = "eastron-sdm630"',
                'registers = [{ quantity = "status", table = "holding", address = 0, type = "uint16" }]',
            ]
    return "\n".join(lines) + "\n"


async def scan_async(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    quiet_pymodbus()
    cfg = _line_config(args, [{"name": "scan", "unit_id": 1, "registers": [{"quantity": "status", "address": 0}]}])
    if cfg.transport != "rtu" and cfg.host:
        problem = await peer_problem(cfg.host, cfg.port, rtu_framing=cfg.transport == "rtu_over_tcp",
                                     timeout=args.timeout)  # fmt: skip
        if problem:
            print(f"error: {problem}", file=err)
            return 2
    bus = Bus(cfg)
    progress = Progress(len(args.units), err)
    try:
        await bus.connect()
        result = await scan_units(bus, args.units, args.timeout, progress)
    except BusUnavailable as exc:
        print(f"error: {exc}", file=err)
        return 2
    finally:
        bus.close()
    found = result.present()
    if args.emit_config:
        out.write(emit_config(cfg, found, args.profile))
    else:
        for unit, what in found.items():
            print(f"unit {unit:3d}: {what}", file=out)
    print(result.explain(), file=err)
    if not found:
        print(f"no unit answered on {cfg.endpoint}.\n{NO_ANSWER_HELP}", file=err)
        return 1
    print(f"{len(found)} unit(s) present: {', '.join(map(str, found))}", file=err)
    return 0


def scan(args: argparse.Namespace) -> int:
    return asyncio.run(scan_async(args, sys.stdout, sys.stderr))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "probe", help="read one Modbus device once and show every field", epilog=PROBE_EPILOG, formatter_class=fmt
    )
    p.add_argument("--config", help="gateway config file (with --source and --device)")
    p.add_argument("--source", help="source name in the config")
    p.add_argument("--device", help="device name in that source")
    _add_line_args(p)
    p.add_argument("--unit", type=int, default=1, help="unit (slave) id, default 1")
    p.add_argument("--profile", help="device profile name or path")
    p.set_defaults(func=probe)

    s = subparsers.add_parser(
        "scan", help="list the Modbus unit ids answering on a line or endpoint", epilog=SCAN_EPILOG, formatter_class=fmt
    )
    _add_line_args(s)
    s.set_defaults(timeout=0.2)
    s.add_argument("--units", type=parse_units, default=parse_units("1-247"), help="unit ids, e.g. 1-247 or 1,5,10-20")
    s.add_argument("--emit-config", action="store_true", help="print a starting [[sources]] TOML for what answered")
    s.add_argument("--profile", help="with --emit-config: profile to put on every device found")
    s.set_defaults(func=scan)
