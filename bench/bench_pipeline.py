"""End-to-end throughput of the core pipeline. Prints numbers; asserts nothing.

    .venv/bin/python bench/bench_pipeline.py [--readings 200000] [--backlog 1000000] [--skip-vm]

1. writer -> durable buffer -> dispatcher -> local sink (readings/s, CPU s per 100k)
2. writer -> durable buffer -> dispatcher -> influxdb sink -> VictoriaMetrics (needs victoria-metrics)
3. a backlog of N readings already in the buffer drained into VictoriaMetrics (seconds)
4. the real daemon (`gateway run`, one simulated source offering --offered readings/s, local sink):
   readings/s delivered and CPU per 100k, all stages included (driver, normaliser, writer, buffer, sink)
5. the real daemon (simulated source at 5,000 readings/s): peak RSS with the local sink, and with the influxdb sink
The whole process runs on one event loop plus the buffer's and the sink's worker threads; with the
GIL that is about one core of work (the CPU column says how much was used).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.buffer import AsyncBuffer
from gateway.dispatch import SinkDispatcher
from gateway.model import Reading
from gateway.sink import Sink
from gateway.sinks.local import LocalSink, LocalSinkConfig
from gateway.writer import BufferWriter

DEVICES = 50
QUANTITIES = ("temperature", "relative_humidity", "pm2_5", "pm10")
UNITS = {"temperature": "Cel", "relative_humidity": "%RH", "pm2_5": "ug/m3", "pm10": "ug/m3"}


def make_readings(n: int, start_ns: int) -> list[Reading]:
    out = []
    for i in range(n):
        q = QUANTITIES[i % 4]
        out.append(Reading(ts_ns=start_ns + i * 1_000_000, site="bench", gateway="gw", device=f"dev-{i // 4 % DEVICES}",
                           quantity=q, value=20.0 + (i % 100) / 10, unit=UNITS[q], tags={"zone": "north"}))  # fmt: skip
    return out


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def through_pipeline(sink: Sink, state: Path, n: int, sync: str) -> tuple[float, float]:
    buffer = await AsyncBuffer.open(state / f"buffer-{sink.name}-{sync}.sqlite", sync=sync)  # type: ignore[arg-type]
    await buffer.set_sinks([sink.name])
    dispatcher = SinkDispatcher(sink, buffer)
    writer = BufferWriter(buffer, flush_interval_s=0.2, flush_max_readings=10_000, on_commit=dispatcher.notify)
    readings = make_readings(n, time.time_ns() - n * 1_000_000)
    wtask = asyncio.create_task(writer.run())
    dtask = asyncio.create_task(dispatcher.run())
    c0, t0 = cpu_s(), time.perf_counter()
    # 100 producers emitting 500 readings each per round, like 100 sources polling.
    chunk = 500
    for i in range(0, n, chunk * 20):
        await asyncio.gather(*(writer.emit(readings[j : j + chunk]) for j in range(i, min(n, i + chunk * 20), chunk)))
    while dispatcher.sent_total < n:
        await asyncio.sleep(0.01)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    for t in (wtask, dtask):
        t.cancel()
    await asyncio.gather(wtask, dtask, return_exceptions=True)
    await buffer.close()
    return wall, cpu


async def drain_backlog(sink: Sink, state: Path, n: int) -> tuple[float, float, float]:
    buffer = await AsyncBuffer.open(state / "backlog.sqlite", sync="normal", max_bytes=4 * 1024**3)
    await buffer.set_sinks([sink.name])
    t0 = time.perf_counter()
    start = time.time_ns() - n * 1_000_000
    step = 50_000
    for i in range(0, n, step):
        await buffer.append(make_readings(min(step, n - i), start + i * 1_000_000))
    fill = time.perf_counter() - t0
    dispatcher = SinkDispatcher(sink, buffer)
    c0, t0 = cpu_s(), time.perf_counter()
    task = asyncio.create_task(dispatcher.run())
    last = 0.0
    while dispatcher.sent_total < n:
        await asyncio.sleep(0.05)
        if time.perf_counter() - last > 2:
            last = time.perf_counter()
            print(f"    drained {dispatcher.sent_total:,}/{n:,}", flush=True)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await buffer.close()
    return fill, wall, cpu


def daemon_rss(state: Path, seconds: float, sinks: str = "") -> tuple[int, int]:
    """Peak and current RSS (kB) of `gateway run` at 5,000 readings/s into ``sinks`` (default: local)."""
    cfg = state / "rss.toml"
    cfg.write_text(
        f'[gateway]\nsite = "bench"\nname = "gw"\nstate_dir = "{state / "rss"}"\n[metrics]\nenabled = false\n'
        + sinks
        + '[[sources]]\ndriver = "simulated"\nname = "load"\ninterval = "100ms"\nreadings_per_poll = 500\n'
        'devices = [{ name = "seq", kind = "sequence" }]\n'
        '[[sources]]\ndriver = "simulated"\nname = "street"\ninterval = "1s"\n'
        'devices = [{ name = "w", kind = "weather" }, { name = "a", kind = "air" }, { name = "e", kind = "energy" }]\n'
    )
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(cfg)], stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    proc.terminate()
    proc.wait(30)
    return hwm, rss


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_throughput(state: Path, offered_per_s: int, seconds: float) -> tuple[float, float, float]:
    """The real daemon, one simulated source offering ``offered_per_s``, local sink.

    Returns (readings/s delivered to the local store, readings/s made by the source, CPU s per 100k delivered),
    measured between two status snapshots after a warm-up.
    """
    per_poll = offered_per_s // 10
    cfg = state / "throughput.toml"
    cfg.write_text(
        f'[gateway]\nsite = "bench"\nname = "gw"\nstate_dir = "{state / "tp"}"\n[metrics]\nenabled = false\n'
        f'[[sources]]\ndriver = "simulated"\nname = "load"\ninterval = "100ms"\nreadings_per_poll = {per_poll}\n'
        'devices = [{ name = "seq", kind = "sequence" }]\n'
    )
    status_path = state / "tp" / "status.json"
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(cfg)], stderr=subprocess.DEVNULL)

    def snapshot() -> tuple[float, int, int, float]:
        import json

        while True:
            try:
                status = json.loads(status_path.read_text())
                return time.monotonic(), status["sinks"]["local"]["sent"], status["sources"]["load"]["readings"], \
                    _proc_cpu_s(proc.pid)  # fmt: skip
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)

    try:
        time.sleep(3)  # start-up and warm-up
        t0, sent0, made0, cpu0 = snapshot()
        time.sleep(seconds)
        t1, sent1, made1, cpu1 = snapshot()
    finally:
        proc.terminate()
        proc.wait(60)
    delivered = (sent1 - sent0) / (t1 - t0)
    return delivered, (made1 - made0) / (t1 - t0), (cpu1 - cpu0) / max(sent1 - sent0, 1) * 1e5


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--skip-vm", action="store_true")
    parser.add_argument("--rss-seconds", type=float, default=20)
    parser.add_argument("--offered", type=int, default=100_000, help="readings/s the daemon's source offers")
    parser.add_argument("--throughput-seconds", type=float, default=10)
    args = parser.parse_args()
    n = args.readings
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        for sync in ("full", "normal"):
            sink = LocalSink(LocalSinkConfig(type="local", path=state / f"local-{sync}.sqlite"), site="b", gateway="g")
            wall, cpu = await through_pipeline(sink, state, n, sync)
            print(f"local sink, sync={sync:6}: {n / wall:10,.0f} readings/s  "
                  f"({cpu / n * 1e5:.2f} CPU s per 100k, {cpu / wall:.2f} cores)")  # fmt: skip
        if not args.skip_vm:
            from gateway.sinks.influxdb import InfluxDBSink
            from tests.servers import VictoriaMetrics, running

            with running(VictoriaMetrics(state / "vm")) as vm:

                def influx() -> Sink:
                    cfg = InfluxDBSink.config_model.model_validate(
                        {"type": "influxdb", "url": vm.url, "org": "o", "bucket": "b", "batch_size": 10_000}  # type: ignore[attr-defined]
                    )
                    return InfluxDBSink(cfg, site="b", gateway="g")

                wall, cpu = await through_pipeline(influx(), state, n, "full")
                print(f"influxdb sink -> VictoriaMetrics, sync=full: {n / wall:10,.0f} readings/s  "
                      f"({cpu / n * 1e5:.2f} CPU s per 100k)")  # fmt: skip
                fill, wall, cpu = await drain_backlog(influx(), state, args.backlog)
                print(f"backlog of {args.backlog:,} readings (filled in {fill:.1f}s) drained into VictoriaMetrics "
                      f"in {wall:.1f}s = {args.backlog / wall:,.0f} readings/s ({cpu / args.backlog * 1e5:.2f} CPU s "
                      "per 100k)")  # fmt: skip
        delivered, made, cpu = daemon_throughput(state, args.offered, args.throughput_seconds)
        print(f"daemon (gateway run), simulated source offering {args.offered:,}/s -> local sink: "
              f"{delivered:10,.0f} readings/s delivered, {made:,.0f}/s made "
              f"({cpu:.2f} CPU s per 100k, all threads)")  # fmt: skip
        hwm, rss = daemon_rss(state, args.rss_seconds)
        print(f"daemon at 5,000 readings/s for {args.rss_seconds:.0f}s, local sink: peak RSS {hwm / 1024:.1f} MB, "
              f"RSS now {rss / 1024:.1f} MB")  # fmt: skip
        if not args.skip_vm:
            from tests.servers import VictoriaMetrics, running

            with running(VictoriaMetrics(state / "vm-rss")) as vm:
                sink = f'[[sinks]]\ntype = "influxdb"\nurl = "{vm.url}"\norg = "o"\nbucket = "b"\n'
                hwm, rss = daemon_rss(state, args.rss_seconds, sink)
            print(f"daemon at 5,000 readings/s for {args.rss_seconds:.0f}s, influxdb sink: peak RSS "
                  f"{hwm / 1024:.1f} MB, RSS now {rss / 1024:.1f} MB "
                  "(importing influxdb-client and aiohttp costs ~24 MB)")  # fmt: skip
    print(f"bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
