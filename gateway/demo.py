"""``gateway demo``: the whole gateway on simulated hardware, with the embedded local store.

Every driver family contributes a ``DemoPart`` (entry point group
``gateway.demos``): its sources and the simulators behind them. The demo runs
the real daemon (buffer, dispatcher, local sink) and shows the latest value of
every series and the state of sources and sinks, refreshed every two seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway import plugins
from gateway.cli_data import _fmt_value, print_status, print_table
from gateway.config import ConfigError, build_config
from gateway.daemon import Daemon
from gateway.demo_api import DemoPart
from gateway.logsetup import setup_logging
from gateway.sinks.local import LocalStore

log = logging.getLogger("gateway.demo")
REFRESH_S = 2.0


def collect_parts(workdir: Path) -> list[DemoPart]:
    parts = []
    for name, factory in plugins.load_all(plugins.DEMOS).items():
        try:
            (workdir / name).mkdir(parents=True, exist_ok=True)
            part = factory(workdir / name)
        except Exception:
            log.exception("demo part %s failed to build; the demo goes on without it", name)
            continue
        if part is not None:
            parts.append(part)
    return parts


def demo_config(
    state_dir: Path, parts: list[DemoPart], metrics_port: int | None, web_port: int | None = None
) -> dict[str, Any]:
    return {
        "gateway": {"site": "demo-site", "name": "demo-gw", "state_dir": str(state_dir)},
        "buffer": {"sync": "normal"},
        "metrics": {"enabled": metrics_port is not None, "listen": f"127.0.0.1:{metrics_port or 9108}"},
        "web": {"enabled": web_port is not None, "listen": f"127.0.0.1:{web_port or 8080}"},
        "sources": [src for part in parts for src in part.sources],
        "sinks": [{"type": "local", "retention": "1d"}],
    }


def _free_port(preferred: int = 9108) -> int | None:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def run_demo(args: argparse.Namespace) -> int:
    setup_logging("warning")
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_demo(state_dir, args.duration, plain=args.plain or not sys.stdout.isatty()))
    except KeyboardInterrupt:
        return 0


async def _demo(state_dir: Path, duration: float | None, *, plain: bool) -> int:
    parts = collect_parts(state_dir / "sim")
    metrics_port = _free_port()
    web_port = _free_port(8080)
    try:
        config = build_config(demo_config(state_dir, parts, metrics_port, web_port), source="<demo config>")
    except ConfigError as exc:
        print(f"the demo config is invalid (a bug in a demo part):\n{exc}", file=sys.stderr)
        return 2
    started: list[DemoPart] = []
    try:
        for part in parts:
            if part.start is not None:
                await part.start()
            started.append(part)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run(), name="daemon")
        await daemon.ready.wait()
        print(f"gateway demo: {len(config.sources)} sources from {len(parts)} simulated families; "
              f"state in {state_dir}")  # fmt: skip
        for part in parts:
            print(f"  - {part.title}" + "".join(f"\n      {note}" for note in part.notes))
        if daemon.web is not None:
            print(f"  status page: http://127.0.0.1:{daemon.web.port}/   (open it in a browser)")
        if metrics_port:
            print(f"  metrics: http://127.0.0.1:{metrics_port}/metrics")
        print(f"  query it: gateway query --state-dir {state_dir} --latest   (Ctrl-C stops the demo)\n")
        deadline = None if duration is None else time.monotonic() + duration
        while not task.done() and (deadline is None or time.monotonic() < deadline):
            left = REFRESH_S if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.sleep(min(REFRESH_S, left))
            _show(state_dir, daemon, plain=plain)
        daemon.request_stop()
        await task
    finally:
        for part in reversed(started):
            if part.stop is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
    return 0


def _show(state_dir: Path, daemon: Daemon, *, plain: bool) -> None:
    path = state_dir / "local.sqlite"
    rows = []
    if path.exists():
        store = LocalStore(path, readonly=True)
        try:
            now = time.time_ns()
            for p in store.latest():
                r = p.reading
                rows.append([r.device, r.quantity, _fmt_value(r.value), r.unit, r.quality.name.lower(),
                             f"{(now - r.ts_ns) / 1e9:.0f}s ago"])  # fmt: skip
        finally:
            store.close()
    if not plain:
        sys.stdout.write("\x1b[H\x1b[2J")
    sys.stdout.write(time.strftime("%H:%M:%S") + f"  latest readings ({len(rows)} series)\n")
    if rows:
        print_table(rows, ["device", "quantity", "value", "unit", "quality", "age"])
    sys.stdout.write("\n")
    print_status(daemon.status(), 0.0)
    sys.stdout.write("\n")
    sys.stdout.flush()
