"""A fleet on one machine: N gateway processes against one Mosquitto and one VictoriaMetrics.

Run: .venv/bin/python bench/bench_fleet.py [--gateways 200] [--interval 5s] [--window 30]

Each gateway: a simulated source (a counter and a weather station, polled every ``--interval``), an
influxdb sink to VictoriaMetrics, and the fleet status on Mosquitto (``[fleet]``, status every 30 s,
health readings every 60 s, keepalive 15 s). Prints:

- fleet start time: from the first launch until every gateway is delivering and its status is on the broker;
- per gateway, over a steady window: CPU (% of one core) and RSS (mean, max);
- the broker's and the store's CPU and RSS over the same window, status messages/s and samples/s ingested;
- how the fleet's polls spread over the interval (the poll phase): the busiest tenth of the interval's
  share of the samples (10 % would be perfectly even; 100 % is everyone at once);
- ``gateway fleet --json`` over all of them: its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import fleet_harness as fh
from tests.servers import Mosquitto, VictoriaMetrics, running

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def vm_rows_inserted(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        total = 0.0
        for line in resp.read().decode().splitlines():
            if line.startswith("vm_rows_inserted_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=200)
    ap.add_argument("--interval", default="5s")
    ap.add_argument("--window", type=float, default=30.0, help="seconds of steady state measured")
    ap.add_argument("--phase", default="auto", help='[gateway] poll_phase of every gateway: "auto" or e.g. 0')
    args = ap.parse_args()
    n = args.gateways
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with running(Mosquitto(tmp / "mq")) as mq, running(VictoriaMetrics(tmp / "vm")) as vm:
            assert isinstance(mq, Mosquitto) and isinstance(vm, VictoriaMetrics)
            assert mq.proc is not None and vm.proc is not None
            cfgs = [
                fh.gateway_config(tmp / f"gw-{i:03d}", f"gw-{i:03d}", vm_url=vm.url, mqtt_port=mq.port,
                                  interval=args.interval, keepalive=15, status_interval="30s")
                for i in range(n)
            ]  # fmt: skip
            phase = f'"{args.phase}"' if args.phase == "auto" else args.phase
            for cfg in cfgs:  # health readings every 60 s, as in production
                text = cfg.read_text().replace('health_interval = "30s"', 'health_interval = "60s"')
                cfg.write_text(text.replace("[buffer]", f"poll_phase = {phase}\n[buffer]", 1))
            t0 = time.monotonic()
            procs = [fh.start(cfg) for cfg in cfgs]
            try:
                fh.wait(lambda: all(fh.publishing(c) for c in cfgs), 1800, "every gateway publishing")
                start_s = time.monotonic() - t0
                print(f"{n} gateways, interval {args.interval}, poll_phase {args.phase}: "
                      f"fleet start {start_s:.1f} s (launch to all delivering)")  # fmt: skip
                time.sleep(5)  # let the start-up transients pass
                pids = [p.pid for p in procs]
                before = {pid: cpu_s(pid) for pid in pids}
                mq_before, vm_before = cpu_s(mq.proc.pid), cpu_s(vm.proc.pid)
                rows_before = vm_rows_inserted(vm.url)
                w0 = time.monotonic()
                time.sleep(args.window)
                window = time.monotonic() - w0
                cpu = [100 * (cpu_s(pid) - before[pid]) / window for pid in pids]
                rss = [rss_mb(pid) for pid in pids]
                mq_cpu = 100 * (cpu_s(mq.proc.pid) - mq_before) / window
                vm_cpu = 100 * (cpu_s(vm.proc.pid) - vm_before) / window
                rows = (vm_rows_inserted(vm.url) - rows_before) / window
                print(f"per gateway: CPU mean {statistics.mean(cpu):.2f} % of a core (max {max(cpu):.2f}), "
                      f"RSS mean {statistics.mean(rss):.1f} MB (max {max(rss):.1f}), "
                      f"total {sum(rss) / 1024:.1f} GB")  # fmt: skip
                print(f"mosquitto: CPU {mq_cpu:.2f} %, RSS {rss_mb(mq.proc.pid):.1f} MB; "
                      f"status messages expected {n / 30:.1f}/s (one per gateway per 30 s, plus changes)")  # fmt: skip
                print(f"victoria-metrics: CPU {vm_cpu:.2f} %, RSS {rss_mb(vm.proc.pid):.1f} MB, "
                      f"{rows:.0f} samples/s ingested")  # fmt: skip
                t_fleet = time.monotonic()
                out = subprocess.run(
                    [sys.executable, "-m", "gateway", "fleet", "--broker", "127.0.0.1", "--port", str(mq.port),
                     "--json"], capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                table = json.loads(out.stdout)
                print(f"gateway fleet --json: {len(table)} rows in {time.monotonic() - t_fleet:.2f} s")
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(60)
                    except subprocess.TimeoutExpired:
                        p.kill()
            vm.flush()
            spread(vm, args.interval)


def spread(vm: VictoriaMetrics, interval: str) -> None:
    from gateway.config_types import parse_duration

    period_ms = parse_duration(interval) * 1000
    bins = [0] * 10
    for series in vm.export('{__name__="sequence_value"}'):
        for ts in series["timestamps"]:  # type: ignore[union-attr]
            bins[int((int(ts) % period_ms) / period_ms * 10)] += 1  # type: ignore[call-overload]
    total = sum(bins) or 1
    print(f"poll spread over the interval: busiest tenth holds {100 * max(bins) / total:.1f} % of the samples "
          f"(10 % = even, 100 % = all at once); per tenth: {[round(100 * b / total) for b in bins]}")  # fmt: skip


if __name__ == "__main__":
    main()
