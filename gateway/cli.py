"""The ``gateway`` command. Field tools from drivers (probe, scan) and simulators plug in by entry points."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__, plugins

if TYPE_CHECKING:
    from gateway.config import Config, ConfigProblem

DEFAULT_CONFIG = os.environ.get("GATEWAY_CONFIG", "/etc/gateway/gateway.toml")
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _parser(
    name: str, sub: argparse._SubParsersAction[argparse.ArgumentParser], help_: str, example: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default: $GATEWAY_CONFIG or {DEFAULT_CONFIG})"
    )


def build_parser(*, with_plugins: bool = True) -> argparse.ArgumentParser:
    """The whole command line; ``with_plugins=False`` leaves out the simulators and plugin field tools,
    whose imports (pymodbus' server side among them) took 0.5 s of the daemon's startup."""
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="IoT sensor gateway: drivers -> durable buffer -> InfluxDB / MQTT / local store.",
        epilog="examples:\n  gateway demo\n  gateway check -c /etc/gateway/gateway.toml\n  gateway run -c gateway.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _parser("run", sub, "run the gateway daemon", "gateway run -c /etc/gateway/gateway.toml")
    _add_config(p)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override [log] level")
    p.set_defaults(func=cmd_run)

    p = _parser("check", sub, "validate a config file; exit 0 if valid, 2 with every error", "gateway check -c gw.toml")
    _add_config(p)
    p.set_defaults(func=cmd_check)

    p = _parser(
        "routes",
        sub,
        "print what each sink will receive (sources, devices, quantities) and in what form",
        "gateway routes -c gw.toml",
    )
    _add_config(p)
    p.set_defaults(func=cmd_routes)

    p = _parser(
        "demo",
        sub,
        "run the gateway on simulated sensors with the embedded local store (no server needed)",
        "gateway demo --duration 30",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--state-dir", type=Path, default=None, help="where to keep the demo buffer and store (temp dir)")
    p.add_argument("--plain", action="store_true", help="no screen refresh (append lines), e.g. when piped")
    p.add_argument("--keep", action="store_true", help="keep the temporary state folder on exit")
    p.set_defaults(func=cmd_demo)

    from gateway import cli_data

    cli_data.register(sub, _parser, _add_config)

    p = _parser("version", sub, "print the version and the installed plugins", "gateway version")
    p.set_defaults(func=cmd_version)
    if not with_plugins:
        return parser

    sim = _parser("sim", sub, "run a hardware simulator", "gateway sim modbus --help")
    sim_sub = sim.add_subparsers(dest="simulator", metavar="KIND", required=True)
    for name, module in plugins.load_all(plugins.SIMULATORS).items():
        doc = (module.__doc__ or f"{name} simulator").strip().splitlines()[0]
        sp = sim_sub.add_parser(name, help=doc, description=module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        module.add_arguments(sp)
        sp.set_defaults(func=module.main)

    for register in plugins.load_all(plugins.CLI).values():
        register(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from gateway.config import ConfigError, load_config
    from gateway.daemon import Daemon, tune_gc
    from gateway.logsetup import setup_logging
    from gateway.preflight import preflight

    try:
        config = load_config(args.config)
        # Exit 2, not a traceback: the unit's RestartPreventExitStatus=2 then stops a restart loop.
        problems = preflight(config, create=True)
        if problems:
            raise ConfigError(args.config, problems)
    except ConfigError as exc:
        print(f"{exc}\nThe gateway did not start. Fix the config (check it with: gateway check -c {args.config})",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    setup_logging(args.log_level or config.base.log.level)
    for warning in (*config.warnings, *_fleet_warnings(config)):
        logging.getLogger("gateway.config").warning("%s: %s", args.config, warning)
    # A watchdog kill (SIGABRT) then leaves every thread's Python traceback in the journal.
    faulthandler.enable()
    tune_gc()
    asyncio.run(Daemon(config).run())
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.preflight import preflight

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {exc.file}", file=sys.stderr)
        return EXIT_CONFIG
    # Warnings do not change the exit code: the config is valid, but `run` may refuse to start
    # (a missing credential file) or the setting deserves a second look.
    for warning in (*config.warnings, *_fleet_warnings(config), *preflight(config, create=False)):
        key = f"{warning.key_path}: " if warning.key_path else ""
        print(f"{args.config}: {key}warning: {warning.message}", file=sys.stderr)
    drivers: dict[str, int] = {}
    for s in config.sources:
        drivers[s.config.driver] = drivers.get(s.config.driver, 0) + 1
    print(f"{args.config}: OK")
    print(f"  site {config.site}, gateway {config.gateway_name}")
    print(f"  {len(config.sources)} source(s): " + ", ".join(f"{n} {d}" for d, n in sorted(drivers.items())))
    print("  sinks: " + ", ".join(
        f"{s.config.sink_name} ({s.config.type}{'' if s.config.route.is_identity else ', routed'})"
        for s in config.sinks))  # fmt: skip
    if any(not s.config.route.is_identity for s in config.sinks):
        print(f"  routes: see gateway routes -c {args.config}")
    print(f"  buffer: {config.buffer_path} (max {config.base.buffer.max_bytes} bytes, {config.base.buffer.overflow})")
    from gateway.web import describe

    print(f"  status page: {describe(config.base.web)}")
    return EXIT_OK


def _fleet_warnings(config: Config) -> list[ConfigProblem]:
    from gateway.config_checks import default_name_warning

    name_unset = default_name_warning(config.base.gateway)
    return [name_unset] if name_unset is not None else []


def cmd_routes(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.routing_audit import describe_routes

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    print(describe_routes(config))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"gateway {__version__}")
    for group in (plugins.DRIVERS, plugins.SINKS, plugins.CODECS, plugins.SIMULATORS):
        print(f"  {group.split('.')[1]}: {', '.join(plugins.names(group))}")
    return EXIT_OK


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for a in parser._actions if isinstance(a, argparse._SubParsersAction) for name in a.choices}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `gateway run` starts without importing every plugin's command line (startup to first value <= 0.5 s).
    parser = build_parser(with_plugins=False)
    if not argv or argv[0] not in _commands(parser):
        parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
