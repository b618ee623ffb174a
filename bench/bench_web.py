"""What the status page costs: RSS, CPU per request, and the hot-path cost of feeding its history.

    .venv/bin/python bench/bench_web.py [--seconds 20] [--series 100]

1. Import cost: RSS growth of importing aiohttp.web vs gateway.web.server, in a
   process that already has the daemon and the local sink loaded (why the page
   has its own small HTTP server).
2. A real daemon (``gateway run``) with ``--series`` simulated series at 1 Hz and the
   local store, run twice: page off, then page on with a client that behaves like
   an open page (status every second, sparklines every 5 s). Prints the RSS of
   each after ``--seconds``, and the daemon's CPU per request for a burst of
   status requests (from /proc/<pid>/stat, minus the idle CPU of the same time).
3. The normaliser with and without the history observer, per value (readings, and frames of 40).
4. The history observer alone, per value in frames and per reading.
5. The page's once-a-second tick without a browser (``--devices`` x ``--registers``
   in frames of 40, one poll of each device per second): CPU per tick, per value,
   and of one render of /api/status when a client asks; the rings' memory.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def import_cost(module: str) -> int:
    code = (
        # The daemon's modules but the page's (gateway.daemon imports gateway.web.server).
        "import gateway.supervisor, gateway.dispatch, gateway.writer, gateway.buffer, gateway.sinks.local\n"
        "def rss():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
        f"a = rss(); import {module}; print(rss() - a)"
    )
    return int(subprocess.check_output([sys.executable, "-c", code], text=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(state: Path, port: int, series: int, web: bool) -> str:
    devices = ", ".join(f'{{ name = "meter-{i}", kind = "energy" }}' for i in range(series // 4))
    return (
        f'[gateway]\nsite = "bench"\nname = "gw"\nstate_dir = "{state}"\n[buffer]\nsync = "normal"\n'
        f'[metrics]\nenabled = false\n[web]\nenabled = {"true" if web else "false"}\nlisten = "127.0.0.1:{port}"\n'
        f'[[sources]]\ndriver = "simulated"\nname = "sim"\ninterval = "1s"\ndevices = [{devices}]\n'
        '[[sinks]]\ntype = "local"\n'
    )


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    answer = conn.getresponse()
    return len(answer.read())


def run_daemon(series: int, seconds: float, web: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        path = Path(tmp) / "gw.toml"
        path.write_text(config(Path(tmp) / "state", port, series, web))
        gateway = Path(sys.executable).with_name("gateway")
        proc = subprocess.Popen([str(gateway), "run", "-c", str(path)], stderr=subprocess.DEVNULL)
        out: dict[str, float] = {}
        try:
            time.sleep(3)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5) if web else None
            c_start, t_start = cpu_s(proc.pid), time.monotonic()
            deadline = time.monotonic() + seconds
            status_bytes = spark_bytes = 0
            next_spark = 0.0
            while time.monotonic() < deadline:  # an open page: status every second, sparklines every 5 s
                if conn is not None:
                    status_bytes = get(conn, "/api/status")
                    if time.monotonic() >= next_spark:
                        spark_bytes = get(conn, "/api/sparklines")
                        next_spark = time.monotonic() + 5
                time.sleep(1)
            out["rss_kb"] = rss_kb(proc.pid)
            out["cpu_pct"] = (cpu_s(proc.pid) - c_start) / (time.monotonic() - t_start) * 100
            if conn is not None:
                out["status_bytes"], out["sparklines_bytes"] = status_bytes, spark_bytes
                idle0 = cpu_s(proc.pid)
                time.sleep(2)
                idle_per_s = (cpu_s(proc.pid) - idle0) / 2
                for path_, n in (("/api/status", 200), ("/api/sparklines", 50), ("/", 200)):
                    c0, t0 = cpu_s(proc.pid), time.monotonic()
                    for _ in range(n):
                        get(conn, path_)
                    wall = time.monotonic() - t0
                    out[f"cpu_ms_per {path_}"] = max(0.0, (cpu_s(proc.pid) - c0 - idle_per_s * wall)) / n * 1e3
                conn.close()
        finally:
            proc.terminate()
            proc.wait(10)
        return out


def hot_path(n: int = 200_000) -> dict[str, tuple[float, float]]:
    """ns per value of the normaliser without -> with the history observer: readings, and frames of 40."""
    from gateway.frame import Frame, FrameFields
    from gateway.model import Quality, make_reading
    from gateway.normalise import Normaliser
    from gateway.quantities import QUANTITIES
    from gateway.web.history import SeriesHistory

    readings = [
        make_reading(i, "s", "g", f"dev-{i % 25}", "voltage", 230.0, "V", {}, Quality.GOOD) for i in range(1000)
    ]
    quantities = list(QUANTITIES)[:40]
    fields = FrameFields.of(quantities, [QUANTITIES[q].unit for q in quantities])
    frames = [Frame(i, "s", "g", f"dev-{i % 25}", fields, [1.0] * 40) for i in range(25)]  # 1,000 values
    out = {}
    for kind, items in (("readings", readings), ("frames of 40", frames)):
        results = []
        for observe in (False, True):
            normaliser = Normaliser(driver="d", source="src", source_tags={}, metrics=None)
            if observe:
                normaliser.observer = SeriesHistory().observer("src")
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(n // 1000):
                    normaliser.normalise(items)
                best = min(best, (time.perf_counter() - t0) / n)
            results.append(best * 1e9)
        out[kind] = (results[0], results[1])
    return out


def observer_cost() -> tuple[float, float, float]:
    """The history observer alone (ns): per value and per frame for a 100 x 500 poll in channels of 40 (frames
    of one layout per device but the last), and per reading."""
    import timeit

    from gateway.frame import Frame, FrameFields
    from gateway.model import Quality, make_reading
    from gateway.web.history import SeriesHistory

    wide, last = (
        FrameFields.of([f"q{i}" for i in range(40)], ["V"] * 40),
        FrameFields.of([f"q{i}" for i in range(20)], ["V"] * 20),
    )
    frames = [Frame(1, "s", "g", f"d{d}", last if c == 12 else wide, [1.0] * (20 if c == 12 else 40))
              for d in range(100) for c in range(13)]  # fmt: skip
    values = sum(len(f) for f in frames)
    observe = SeriesHistory().observer("s")
    per_poll = min(timeit.repeat(lambda: observe(frames), number=20, repeat=5)) / 20
    readings = [make_reading(1, "s", "g", f"d{i % 25}", "voltage", 1.0, "V", {}, Quality.GOOD) for i in range(1000)]
    observe = SeriesHistory().observer("s")
    per_batch = min(timeit.repeat(lambda: observe(readings), number=200, repeat=5)) / 200
    return per_poll / values * 1e9, per_poll / len(frames) * 1e9, per_batch / len(readings) * 1e9


def tick_cost(devices: int, registers: int, ticks: int = 10) -> dict[str, float]:
    """The tick and one render of /api/status, in ms (best of ``ticks``)."""
    from gateway.frame import Frame, FrameFields
    from gateway.web.history import SeriesHistory
    from gateway.web.view import StatusView

    history = SeriesHistory()
    observe = history.observer("bus")
    layouts = [
        FrameFields.of([f"r{i}" for i in range(lo, min(lo + 40, registers))], ["V"] * min(40, registers - lo))
        for lo in range(0, registers, 40)
    ]
    status = {"site": "s", "gateway": "g", "version": "1", "started_ns": time.time_ns(), "clock_synchronized": True,
              "sources": {"bus": {"driver": "modbus", "state": "running", "error": None, "restarts": 0,
                                  "readings": 0, "devices_down": [], "down_reasons": {}}},
              "sinks": {}, "buffer": None}  # fmt: skip
    view = StatusView(status=lambda: status, history=history)
    best_tick = best_render = float("inf")
    for n in range(ticks):
        now = time.time_ns()
        for d in range(devices):
            observe([Frame(now, "s", "g", f"dev-{d}", f, [float(n + d)] * len(f)) for f in layouts])
        t0 = time.perf_counter()
        view.tick()
        t1 = time.perf_counter()
        payload = view.payload
        t2 = time.perf_counter()
        assert payload
        best_tick, best_render = min(best_tick, t1 - t0), min(best_render, t2 - t1)
    return {"tick_ms": best_tick * 1e3, "render_ms": best_render * 1e3, "values": devices * registers,
            "ring_mb": history.ring_bytes / 1024**2, "series": len(history.series()),
            "without_plot": history.series_without_rings}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--registers", type=int, default=500)
    parser.add_argument("--tick-only", action="store_true", help="only parts 4 and 5 (no daemon)")
    args = parser.parse_args()
    tick = tick_cost(args.devices, args.registers)
    print(f"tick, {args.devices} x {args.registers} values/s, no browser: {tick['tick_ms']:.1f} ms/s "
          f"({tick['tick_ms'] * 1e3 / tick['values']:.2f} us per value); "
          f"one /api/status render when asked: {tick['render_ms']:.1f} ms")  # fmt: skip
    print(f"  history: {tick['series']:.0f} series, rings {tick['ring_mb']:.1f} MiB "
          f"({tick['without_plot']:.0f} series over the bound, without a plot)")  # fmt: skip
    per_value, per_frame, per_reading = observer_cost()
    print(f"history observer alone: {per_value:.1f} ns per value in frames of 40 ({per_frame:.0f} ns per frame), "
          f"{per_reading:.0f} ns per reading")  # fmt: skip
    if args.tick_only:
        return
    print(f"import aiohttp.web          : +{import_cost('aiohttp.web') / 1024:.1f} MB RSS")
    print(f"import gateway.web.server   : +{import_cost('gateway.web.server') / 1024:.1f} MB RSS")
    off = run_daemon(args.series, args.seconds, web=False)
    on = run_daemon(args.series, args.seconds, web=True)
    print(f"daemon, {args.series} series, page off: RSS {off['rss_kb'] / 1024:.1f} MB, CPU {off['cpu_pct']:.1f} %")
    print(f"daemon, {args.series} series, page on and open {args.seconds:.0f} s: RSS {on['rss_kb'] / 1024:.1f} MB "
          f"(+{(on['rss_kb'] - off['rss_kb']) / 1024:.1f} MB), CPU {on['cpu_pct']:.1f} %")  # fmt: skip
    print(f"  /api/status {on['status_bytes'] / 1024:.1f} KB, /api/sparklines {on['sparklines_bytes'] / 1024:.1f} KB")
    for key, value in on.items():
        if key.startswith("cpu_ms_per"):
            print(f"  CPU per request {key.split(' ', 1)[1]:16s}: {value:.2f} ms")
    for kind, (without, with_) in hot_path().items():
        print(f"normaliser per value, {kind}: {without:.0f} ns without the history observer, {with_:.0f} ns with it")


if __name__ == "__main__":
    main()
