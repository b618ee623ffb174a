"""Throughput of the durable buffer: append, take+ack, CPU, memory and file size.

Run: python bench/bench_buffer.py [--readings N]

Prints one line per (sync, batch size, number of sinks):
  append/s      readings appended per second (wall clock, one transaction per batch)
  take+ack/s    readings taken and acked per second, summed over the sinks
  pipeline/s    readings through append + take + ack for every sink (the target: >= 50,000/s)
  cpu_s/100k    process CPU seconds per 100,000 readings through the pipeline
then the file size per million buffered readings and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.buffer import DurableBuffer, Sync
from gateway.model import Quality, Reading

QUANTITIES = [("temperature", "Cel"), ("relative_humidity", "%RH"), ("pm2_5", "ug/m3"), ("co2", "ppm")]


def make_readings(n: int) -> list[Reading]:
    """A realistic mix: 100 devices x 4 quantities, a third with tags, mostly floats."""
    tags_by_device = [{"room": f"R{d % 7}", "floor": str(d % 3)} if d % 3 == 0 else {} for d in range(100)]
    out = []
    t0 = 1_700_000_000_000_000_000
    for i in range(n):
        d = i % 100
        quantity, unit = QUANTITIES[(i // 100) % 4]
        value: float | int = (i % 1000) * 0.1 if quantity != "co2" else 400 + i % 600
        out.append(
            Reading(
                t0 + i * 1_000_000,
                "site-a",
                "gw-01",
                f"device-{d:03d}",
                quantity,
                value,
                unit,
                tags_by_device[d],
                Quality.GOOD,
            )
        )
    return out


def run(readings: list[Reading], sync: Sync, batch: int, sinks: int, workdir: Path) -> dict[str, float]:
    path = workdir / f"bench-{sync}-{batch}-{sinks}.db"
    names = [f"sink{i}" for i in range(sinks)]
    with DurableBuffer(path, sync=sync, max_bytes=10 * 1024**3) as buf:
        buf.set_sinks(names)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for start in range(0, len(readings), batch):
            buf.append(readings[start : start + batch])
        append_wall = time.perf_counter() - wall0
        wall1 = time.perf_counter()
        taken = 0
        for name in names:
            while items := buf.take(name, batch):
                buf.ack(name, items[-1].id)
                taken += len(items)
        take_wall = time.perf_counter() - wall1
        cpu = time.process_time() - cpu0
        assert taken == len(readings) * sinks and buf.stats().readings == 0
    n = len(readings)
    return {
        "append": n / append_wall,
        "take_ack": taken / take_wall,
        "pipeline": n / (append_wall + take_wall),
        "cpu_per_100k": cpu / n * 100_000,
    }


def file_size_per_million(readings: list[Reading], workdir: Path) -> tuple[float, float]:
    path = workdir / "size.db"
    million = 1_000_000
    with DurableBuffer(path, sync="normal", max_bytes=10 * 1024**3) as buf:
        buf.set_sinks(["never"])
        appended = 0
        while appended < million:
            chunk = readings[: min(5000, million - appended)]
            buf.append(chunk)
            appended += len(chunk)
        logical = buf.stats().bytes
    # after close: WAL checkpointed into the database file
    on_disk = path.stat().st_size + (Path(f"{path}-wal").stat().st_size if Path(f"{path}-wal").exists() else 0)
    return on_disk / appended * million, logical / appended * million


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=200_000, help="readings per run (default 200000)")
    args = parser.parse_args()
    readings = make_readings(args.readings)
    print(f"durable buffer benchmark: {args.readings} readings per run, python {sys.version.split()[0]}")
    header = ("sync", "batch", "sinks", "append/s", "take+ack/s", "pipeline/s", "cpu_s/100k")
    print("{:6} {:>5} {:>5} {:>10} {:>11} {:>11} {:>10}".format(*header))
    with tempfile.TemporaryDirectory(prefix="bench-buffer-") as tmp:
        workdir = Path(tmp)
        syncs: tuple[Sync, ...] = ("full", "normal")
        for sync in syncs:
            for batch in (1000, 5000):
                for sinks in (1, 2):
                    r = run(readings, sync, batch, sinks, workdir)
                    print(
                        f"{sync:6} {batch:5d} {sinks:5d} {r['append']:10,.0f} {r['take_ack']:11,.0f}"
                        f" {r['pipeline']:11,.0f} {r['cpu_per_100k']:10.3f}"
                    )
        on_disk, logical = file_size_per_million(readings, workdir)
    print(f"file size per million buffered readings: {on_disk / 1e6:.1f} MB on disk, {logical / 1e6:.1f} MB logical")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {peak_kib / 1024:.1f} MiB (including the {args.readings} prepared Reading objects)")


if __name__ == "__main__":
    main()
