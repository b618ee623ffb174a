"""``gateway demo``: the whole gateway on simulated hardware, with the embedded local store.

Every driver family contributes a ``DemoPart`` (entry point group
``gateway.demos``): its sources and the simulators behind them. The demo runs
the real daemon (buffer, dispatcher, local sink) and shows, refreshed every two
seconds under a banner that stays on screen, the latest value of every device
and quantity and the state of sources and sinks. Its state goes to a temporary
folder that is removed on exit unless ``--keep`` (or ``--state-dir``) is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import shutil
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
from gateway.sinks.local import LocalStore, StoredPoint

log = logging.getLogger("gateway.demo")
REFRESH_S = 2.0
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


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


def gateway_command() -> str:
    """How to call this very gateway again, as a full path (it may not be on the PATH, e.g. .venv/bin)."""
    argv0 = sys.argv[0]
    if not argv0 or argv0.endswith(".py"):  # python -m gateway
        return f"{sys.executable} -m gateway"
    found = argv0 if os.sep in argv0 else shutil.which(argv0)
    return os.path.abspath(found) if found else argv0


def run_demo(args: argparse.Namespace) -> int:
    setup_logging("warning")
    temporary = args.state_dir is None
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    keep = not temporary or args.keep
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_demo(state_dir, args.duration, plain=args.plain or not sys.stdout.isatty(), keep=keep))
    except KeyboardInterrupt:
        return 0
    finally:
        if keep:
            print(f"demo state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
            print(f"demo state removed ({state_dir}); --keep keeps it")


def banner(
    state_dir: Path,
    parts: list[DemoPart],
    n_sources: int,
    metrics_port: int | None,
    *,
    web_port: int | None = None,
    keep: bool,
) -> str:
    lines = [f"gateway demo: {n_sources} sources from {len(parts)} simulated families; state in {state_dir}"]
    for part in parts:
        lines.append(f"  - {part.title}" + "".join(f"\n      {note}" for note in part.notes))
    if web_port:
        lines.append(f"  status page: http://127.0.0.1:{web_port}/   (open it in a browser)")
    if metrics_port:
        lines.append(f"  metrics: http://127.0.0.1:{metrics_port}/metrics")
    after = "" if keep else " (while it runs; --keep keeps the state after)"
    lines.append(f"  query it{after}:\n    {gateway_command()} query --state-dir {state_dir} --latest")
    lines.append("  Ctrl-C stops the demo.")
    return "\n".join(lines) + "\n\n"


async def _demo(state_dir: Path, duration: float | None, *, plain: bool, keep: bool = True) -> int:
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
        top = banner(
            state_dir,
            parts,
            len(config.sources),
            metrics_port,
            web_port=daemon.web.port if daemon.web else None,
            keep=keep,
        )
        # Appended output shows the banner once; a refreshed screen redraws it on top every time.
        sys.stdout.write(top if plain else CLEAR + top)
        sys.stdout.flush()
        deadline = None if duration is None else time.monotonic() + duration
        while not task.done() and (deadline is None or time.monotonic() < deadline):
            left = REFRESH_S if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.sleep(min(REFRESH_S, left))
            _show(state_dir, daemon, plain=plain, top=top)
        daemon.request_stop()
        await task
    finally:
        for part in reversed(started):
            if part.stop is not None:
                with contextlib.suppress(Exception):
                    await part.stop()
    return 0


TAGS_WIDTH = 36


def latest_rows(points: list[StoredPoint], now_ns: int) -> list[list[str]]:
    """One row per device and quantity: the newest of its series, with how many more there are.

    A series is a tag set, and some tags change all the time (a GPS fix tags its readings with the
    position; a LoRa uplink with the gateway that heard it): one row per series would grow for ever.
    """
    groups: dict[tuple[str, str], list[StoredPoint]] = {}
    for point in points:
        groups.setdefault((point.reading.device, point.reading.quantity), []).append(point)
    rows = []
    for (device, quantity), series in sorted(groups.items()):
        r = max(series, key=lambda p: p.reading.ts_ns).reading
        tags = ",".join(f"{k}={v}" for k, v in sorted(r.tags.items()))
        if len(tags) > TAGS_WIDTH:
            tags = tags[: TAGS_WIDTH - 1] + "…"
        if len(series) > 1:
            tags += f" (+{len(series) - 1} series)"
        rows.append([device, quantity, _fmt_value(r.value), r.unit, r.quality.name.lower(),
                     f"{(now_ns - r.ts_ns) / 1e9:.0f}s ago", tags])  # fmt: skip
    return rows


def _show(state_dir: Path, daemon: Daemon, *, plain: bool, top: str) -> None:
    path = state_dir / "local.sqlite"
    rows = []
    if path.exists():
        store = LocalStore(path, readonly=True)
        try:
            rows = latest_rows(store.latest(), time.time_ns())
        finally:
            store.close()
    status = io.StringIO()
    print_status(daemon.status(), 0.0, out=status)
    title = time.strftime("%H:%M:%S") + f"  latest readings ({len(rows)} devices x quantities)\n"
    if plain:
        sys.stdout.write(title + _table(rows) + "\n" + status.getvalue() + "\n")
    else:
        # Keep the banner on screen: drop table rows that would push it off the top of the terminal.
        fixed = top.count("\n") + title.count("\n") + status.getvalue().count("\n") + 3
        room = max(3, shutil.get_terminal_size().lines - fixed)
        shown = rows if len(rows) <= room else rows[: room - 1]
        table = _table(shown)
        if len(shown) < len(rows):
            table += f"... {len(rows) - len(shown)} more: a taller terminal, or the query command above\n"
        sys.stdout.write(CLEAR + top + title + table + "\n" + status.getvalue())
    sys.stdout.flush()


def _table(rows: list[list[str]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    print_table(rows, ["device", "quantity", "value", "unit", "quality", "age", "tags"], out=out)
    return out.getvalue()
