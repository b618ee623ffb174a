"""CLI commands that read the gateway's data: query, tail, status, buffer stats, buffer dead-letters."""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.config_types import parse_duration
from gateway.model import Reading

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
STALE_AFTER_S = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], make: Callable[..., argparse.ArgumentParser],
             add_config: Callable[[argparse.ArgumentParser], None]) -> None:  # fmt: skip
    def common(p: argparse.ArgumentParser) -> None:
        add_config(p)
        p.add_argument("--state-dir", type=Path, help="read this state directory instead of the config's")

    p = make("query", sub, "print stored readings from the local store",
             "gateway query -c gw.toml --device park-weather --quantity temperature --since 1h")  # fmt: skip
    common(p)
    p.add_argument("--device")
    p.add_argument("--quantity")
    p.add_argument("--since", type=_duration_arg, default="1h", help="how far back (e.g. 15m, 1h, 7d; default 1h)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--latest", action="store_true", help="only the newest value of every series")
    p.set_defaults(func=cmd_query)

    p = make("tail", sub, "follow readings as they reach the local store",
             "gateway tail -c gw.toml --device school-air")  # fmt: skip
    common(p)
    p.add_argument("--device")
    p.add_argument("--quantity")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.add_argument("--count", type=int, default=0, help="stop after this many readings (default: follow forever)")
    p.set_defaults(func=cmd_tail)

    p = make("status", sub, "show what the running daemon is doing (sources, sinks, buffer)",
             "gateway status -c /etc/gateway/gateway.toml")  # fmt: skip
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    buf = make("buffer", sub, "inspect the durable buffer", "gateway buffer stats -c gw.toml")
    buf_sub = buf.add_subparsers(dest="buffer_command", metavar="COMMAND", required=True)
    p = make(
        "stats", buf_sub, "buffer depth, bytes, oldest reading, per-sink progress", "gateway buffer stats -c gw.toml"
    )
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_buffer_stats)
    p = make("dead-letters", buf_sub, "readings a sink refused (400/422), messages a driver rejected",
             "gateway buffer dead-letters -c gw.toml --sink influxdb")  # fmt: skip
    common(p)
    p.add_argument("--sink")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dead_letters)


def _duration_arg(text: str) -> float:
    """A usage error (exit 2 with the usage line), not a traceback, for ``--since "5 parsecs"``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (got {text!r})") from None


# --- paths -----------------------------------------------------------------


class _Paths:
    def __init__(self, state_dir: Path, buffer: Path, local: Path) -> None:
        self.state_dir, self.buffer, self.local = state_dir, buffer, local


def _paths(args: argparse.Namespace) -> _Paths | int:
    if args.state_dir is not None:
        d = Path(args.state_dir)
        return _Paths(d, d / "buffer.sqlite", d / "local.sqlite")
    from gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    state_dir = config.base.gateway.state_dir
    local = state_dir / "local.sqlite"
    for sink in config.sinks:
        path = getattr(sink.config, "path", None)
        if sink.config.type == "local" and path is not None:
            local = Path(path)
    return _Paths(state_dir, config.buffer_path, local)


# --- formatting ---------------------------------------------------------------


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(r: Reading) -> list[str]:
    tags = ",".join(f"{k}={v}" for k, v in sorted(r.tags.items()))
    return [_iso(r.ts_ns), r.device, r.quantity, _fmt_value(r.value), r.unit, r.quality.name.lower(), tags]


def _fmt_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


HEADER = ["time (UTC)", "device", "quantity", "value", "unit", "quality", "tags"]


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER, out: Any = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for line in (header, *rows):
        out.write("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=False)).rstrip() + "\n")


def reading_dict(r: Reading) -> dict[str, Any]:
    return {"time": _iso(r.ts_ns), "ts_ns": r.ts_ns, "device": r.device, "quantity": r.quantity, "value": r.value,
            "unit": r.unit, "quality": r.quality.name.lower(), "tags": dict(r.tags)}  # fmt: skip


# --- commands ----------------------------------------------------------------


def _open_store(paths: _Paths) -> Any:
    from gateway.sinks.local import LocalStore, StoreSchemaError

    if not paths.local.exists():
        print(f"no local store at {paths.local}: is a `local` sink configured and has the gateway run?",
              file=sys.stderr)  # fmt: skip
        return None
    try:
        return LocalStore(paths.local, readonly=True)
    except (sqlite3.DatabaseError, StoreSchemaError) as exc:
        print(f"cannot read the local store {paths.local} ({exc}): is the local sink's path right?", file=sys.stderr)
        return None


def cmd_query(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if isinstance(paths, int):
        return paths
    store = _open_store(paths)
    if store is None:
        return EXIT_FAILURE
    try:
        if args.latest:
            points = [p for p in store.latest() if (args.device in (None, p.reading.device))
                      and (args.quantity in (None, p.reading.quantity))]  # fmt: skip
        else:
            since_ns = time.time_ns() - int(args.since * 1e9)
            points = store.query(device=args.device, quantity=args.quantity, since_ns=since_ns, limit=args.limit,
                                 newest_first=True)[::-1]  # fmt: skip
    finally:
        store.close()
    readings = [p.reading for p in points]
    if args.format == "json":
        for r in readings:
            print(json.dumps(reading_dict(r)))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(HEADER)
        writer.writerows(_row(r) for r in readings)
    else:
        if not readings:
            print("no readings match (widen --since, or check --device/--quantity names with --latest)")
            return EXIT_OK
        print_table([_row(r) for r in readings])
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if isinstance(paths, int):
        return paths
    store = None
    deadline = time.monotonic() + 30
    while store is None:  # the daemon may not have created the store yet
        store = _open_store(paths) if paths.local.exists() or time.monotonic() > deadline else None
        if store is None:
            if time.monotonic() > deadline:
                return EXIT_FAILURE
            time.sleep(0.5)
    shown = 0
    try:
        row = store.conn.execute("SELECT COALESCE(MAX(id), 0) FROM points").fetchone()
        last_id = max(0, int(row[0]) - 10)
        if not args.json:
            print("  ".join(HEADER))
        while True:
            points = store.query(device=args.device, quantity=args.quantity, after_id=last_id, limit=1000)
            for p in points:
                last_id = p.id
                r = p.reading
                print(json.dumps(reading_dict(r)) if args.json else "  ".join(_row(r)), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    return EXIT_OK
            if not points:
                time.sleep(0.5)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        store.close()


def cmd_status(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if isinstance(paths, int):
        return paths
    status_file = paths.state_dir / "status.json"
    try:
        status = json.loads(status_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print(f"no status at {status_file}: the gateway is not running (systemctl status gateway) "
              "or uses another state directory", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    age = (time.time_ns() - int(status.get("updated_ns", 0))) / 1e9
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK if age < STALE_AFTER_S else EXIT_FAILURE
    print_status(status, age)
    return EXIT_OK if age < STALE_AFTER_S else EXIT_FAILURE


# A few readings always wait for the next commit (it is at most flush_interval away); many mean it lags.
PENDING_WORTH_SAYING = 10_000


def print_status(status: dict[str, Any], age_s: float, out: Any = None) -> None:
    out = out or sys.stdout
    state = "running" if age_s < STALE_AFTER_S else f"NOT RUNNING (status is {age_s:.0f}s old)"
    out.write(f"gateway {status['gateway']} (site {status['site']}, version {status['version']}): {state}\n")
    if status.get("stalled"):
        out.write(f"STALLED: {status['stalled']}; the systemd watchdog is no longer fed, so systemd restarts the "
                  "daemon (see journalctl -u gateway)\n")  # fmt: skip
    clock = status.get("clock_synchronized")
    if clock is False:
        out.write("clock: NOT SYNCHRONISED (no NTP yet): readings carry the system time as it is; see timedatectl\n")
    elif clock == "unknown":
        out.write("clock: synchronisation unknown (the kernel would not say); check timedatectl by hand\n")
    from gateway.fleet.health import status_lines

    for line in status_lines(status):
        out.write(line + "\n")
    buf = status.get("buffer") or {}
    if buf:
        oldest = buf.get("oldest_ts_ns")
        oldest_txt = f", oldest {(time.time_ns() - oldest) / 1e9:.0f}s old" if oldest else ""
        out.write(f"buffer: {buf['readings']} readings, {buf['bytes'] / 1e6:.1f} MB{oldest_txt}, "
                  f"dropped {buf['dropped_oldest_total']} oldest / {buf['dropped_newest_total']} newest\n")  # fmt: skip
    writer = status.get("writer") or {}
    if writer.get("commit_failed"):
        out.write(f"buffer commits: {writer['commit_failed']} readings LOST to failed commits (see the log); "
                  f"{writer['pending_commit']} waiting in memory\n")  # fmt: skip
    elif writer.get("pending_commit", 0) >= PENDING_WORTH_SAYING:
        out.write(f"buffer commits lag: {writer['pending_commit']} readings waiting in memory for a commit\n")
    rows = []
    for name, s in status.get("sources", {}).items():
        down = s.get("devices_down") or []
        note = s.get("error") or (f"devices down: {', '.join(down)}" if down else "")
        if "aggregates" in s:
            windows = f"{s['aggregates']} aggregates sent, {s['open_windows']} windows open"
            note = f"{windows}; {note}" if note else windows
        rows.append([name, s["driver"], s["state"], str(s["readings"]), str(s["restarts"]), note])
    if rows:
        out.write("\n")
        print_table(rows, ["source", "driver", "state", "readings", "restarts", "problem"], out)
    rows = []
    for name, s in status.get("sinks", {}).items():
        pending = (buf.get("sinks") or {}).get(name, {}).get("pending", "?")
        problem = s.get("error") or ""
        if s.get("restarts"):
            problem = f"dispatcher restarted {s['restarts']}x" + (f"; {problem}" if problem else "")
        # "filtered": readings its routing rules did not select (docs/routing.md); absent from older daemons.
        rows.append([name, s["type"], s["state"], str(s["sent"]), str(s.get("filtered", 0)), str(pending),
                     str(s["dead_lettered"]), problem])  # fmt: skip
    if rows:
        out.write("\n")
        print_table(rows, ["sink", "type", "state", "sent", "filtered", "pending", "dead-lettered", "problem"], out)


def _open_buffer(paths: _Paths) -> Any:
    from gateway.buffer import DurableBuffer
    from gateway.buffer_types import DurableBufferError

    if not paths.buffer.exists():
        print(f"no buffer at {paths.buffer}: has the gateway run with this config?", file=sys.stderr)
        return None
    try:
        return DurableBuffer(paths.buffer, read_only=True)
    except (sqlite3.DatabaseError, DurableBufferError) as exc:
        print(f"cannot read the buffer {paths.buffer} ({exc}): is [buffer] path right?", file=sys.stderr)
        return None


def cmd_buffer_stats(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if isinstance(paths, int):
        return paths
    buffer = _open_buffer(paths)
    if buffer is None:
        return EXIT_FAILURE
    try:
        stats = buffer.stats()
    finally:
        buffer.close()
    if args.json:
        print(json.dumps(asdict(stats), indent=2))
        return EXIT_OK
    oldest = f"{_iso(stats.oldest_ts_ns)}" if stats.oldest_ts_ns else "-"
    print(f"buffer {paths.buffer}")
    print(f"  readings      {stats.readings}")
    print(f"  bytes         {stats.bytes} (file {stats.file_bytes})")
    print(f"  oldest        {oldest}")
    print(f"  dropped       {stats.dropped_oldest_total} oldest, {stats.dropped_newest_total} newest (ever)")
    print(f"  dead letters  {stats.dead_letters_total}")
    print(f"  rejected      {stats.rejected_total} messages drivers could not decode (ever)")
    rows = [[s.name, str(s.acked_id), str(s.pending), _iso(s.oldest_pending_ts_ns) if s.oldest_pending_ts_ns else "-",
             str(s.dead_letters)] for s in stats.sinks.values()]  # fmt: skip
    if rows:
        print()
        print_table(rows, ["sink", "acked id", "pending", "oldest pending", "dead letters"])
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    paths = _paths(args)
    if isinstance(paths, int):
        return paths
    buffer = _open_buffer(paths)
    if buffer is None:
        return EXIT_FAILURE
    try:
        letters = buffer.dead_letters(args.sink, args.limit)
        rejected = [] if args.sink else buffer.rejected(None, args.limit)
    finally:
        buffer.close()
    if args.json:
        for d in letters:
            print(json.dumps({"sink": d.sink, "reason": d.reason, "dead_at": _iso(d.dead_at_ns),
                              **reading_dict(d.reading)}))  # fmt: skip
        for m in rejected:
            print(json.dumps({"rejected_by": m.source, "driver": m.driver, "device": m.device, "reason": m.reason,
                              "rejected_at": _iso(m.rejected_at_ns), "size": m.size,
                              "raw": m.raw.decode("utf-8", "backslashreplace")}))  # fmt: skip
        return EXIT_OK
    if not letters:
        print("no dead letters")
    else:
        print_table([[d.sink, *_row(d.reading)[:5], d.reason[:80]] for d in letters],
                    ["sink", "time (UTC)", "device", "quantity", "value", "unit", "reason"])  # fmt: skip
    if rejected:
        # Messages a driver could not decode at all (no reading came of them), newest first.
        print()
        print_table([[m.source, _iso(m.rejected_at_ns), m.device or "-", m.reason[:60], repr(m.raw[:40])[2:-1]]
                     for m in rejected], ["rejected by", "time (UTC)", "device", "reason", "raw (start)"])  # fmt: skip
    return EXIT_OK
