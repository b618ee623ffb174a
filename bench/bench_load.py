"""Load benchmark (issue 10): the real daemon polling our Modbus TCP simulator, delivering into Mosquitto
(mqtt sink, SenML, QoS 1) or VictoriaMetrics (influxdb sink). Prints a table; asserts nothing.

    .venv/bin/python bench/bench_load.py [--scenarios idle,10x50,100x50,100x100,100x250,100x500]
        [--seconds 20] [--sink mqtt|influxdb] [--type uint16|float32] [--profile]

A scenario DxR is D devices, each on its own TCP endpoint, with R registers (one value each) polled
every second: D*R values/s offered. ``idle`` is the daemon with its sink and no source. Per scenario:

- the daemon (`gateway run -c cfg`, default durable buffer, metrics and status page on) in its own process;
- the simulator (bench/load_sim.py) in ceil(D / --devices-per-sim) processes, their CPU reported;
- values counted where they arrive: a subscriber process at the broker (bench/load_counter.py), or
  VictoriaMetrics' own `vm_rows_inserted_total{type="influx"}`.

Columns: values/s delivered vs offered over the measurement window (from the first delivered value plus
--warmup to the end), the daemon's CPU (all its threads, /proc/<pid>/stat) per delivered value and in
cores, RSS (peak = VmHWM; trend = mean of the window's first third -> last third), latency from the poll
(the reading's timestamp: the aligned poll tick) to the broker p50/p99 and the p50 trend, startup (daemon
spawned -> first value at the broker; polls are aligned to whole seconds, which adds up to 1 s), and
daemon-side counters at the end (missed poll ticks, readings not yet acknowledged by the sink).
--profile runs py-spy on the daemon over the window and prints its top functions and modules (own time).

Each value of the generated profile is a series of its own, as each register is a key of its own elsewhere:
by default the registers are channels of 40 canonical quantities, each channel tagged (``ch = "c003"``), so a
poll is one frame per channel; ``--layout tags`` gives every register the same quantity and a tag of its own
(``ch = "c017"``), so that every value is a frame of its own (the worst case for frames).
The status page is on, as shipped; --no-web measures the pipeline without it. A load the daemon cannot keep
up with takes a few seconds to settle and the figures of
a 20 s run vary from run to run on a shared machine (see the load column): use --seconds 60 or more there.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.servers: Mosquitto, VictoriaMetrics
from load_report import Sample, ScenarioResult, print_table, summarise, top_frames

from gateway.quantities import QUANTITIES
from tests.servers import Mosquitto, VictoriaMetrics, free_port

HERE = Path(__file__).resolve().parent
TICK_S = os.sysconf("SC_CLK_TCK")
# How the daemon is started: ``gateway run`` as shipped, or the same on uvloop's event loop (asyncio.run takes
# its loop from the policy). uvloop is not a dependency of the gateway: this measures what it would change.
_UVLOOP_MAIN = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from gateway.cli import main; sys.exit(main())"
)
_LAUNCH = {"asyncio": ("-m", "gateway"), "uvloop": ("-c", _UVLOOP_MAIN)}


@dataclass(frozen=True)
class Scenario:
    name: str
    devices: int
    registers: int

    @classmethod
    def parse(cls, text: str) -> Scenario:
        if text == "idle":
            return cls(text, 0, 0)
        devices, sep, registers = text.partition("x")
        if not sep or not devices.isdigit() or not registers.isdigit():
            raise argparse.ArgumentTypeError(f"a scenario is 'idle' or DEVICESxREGISTERS, e.g. 100x50; got {text!r}")
        return cls(text, int(devices), int(registers))


# Canonical quantities taking plain numbers: a channel of the ``channels`` layout has one register of each.
CHANNEL_QUANTITIES = list(QUANTITIES)[:40]


def write_profile(folder: Path, registers: int, reg_type: str, layout: str = "channels") -> str:
    """A profile of ``registers`` values at consecutive holding addresses, each value a series of its own.

    ``channels``: blocks of 40 quantities, each block tagged with its channel (``ch = "c003"``), as a
    multi-channel meter's registers are: a poll is one frame per channel. ``tags``: one quantity with a tag
    per register, so that every value is a frame of its own (the worst case).
    """
    name = f"bench-load-{reg_type}-{registers}-{layout}"
    width = 2 if reg_type == "float32" else 1
    lines = [f'description = "bench_load: {registers} x {reg_type}, {layout}"\n']
    for i in range(registers):
        scale = "" if reg_type == "float32" else "scale = 0.01\n"
        if layout == "channels":
            channel, quantity = divmod(i, len(CHANNEL_QUANTITIES))
            key = f'quantity = "{CHANNEL_QUANTITIES[quantity]}"\ntags = {{ ch = "c{channel:03d}" }}\n'
        else:
            key = f'quantity = "temperature"\ntags = {{ ch = "c{i:03d}" }}\n'
        lines.append(f'[[registers]]\n{key}table = "holding"\naddress = {i * width}\ntype = "{reg_type}"\n{scale}')
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text("\n".join(lines))
    return name


def start_simulators(
    procs: list[subprocess.Popen[str]], devices: int, per_process: int, profile: str, profile_dir: Path, log: IO[str]
) -> list[int]:
    """Start the simulator processes (appended to ``procs`` as they start); returns the endpoints' ports."""
    ports: list[int] = []
    for first in range(0, devices, per_process):
        count = min(per_process, devices - first)
        cmd = [sys.executable, str(HERE / "load_sim.py"), "--profile", profile, "--profile-dir", str(profile_dir)]
        procs.append(subprocess.Popen([*cmd, "--endpoints", str(count)], stdout=subprocess.PIPE, stderr=log, text=True))
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ports "):
            raise RuntimeError(f"a simulator did not start (see {log.name}): {line!r}")
        ports += [int(p) for p in line.split()[1].split(",")]
    return ports


def write_config(
    path: Path,
    scenario: Scenario,
    sink: str,
    sink_port: int,
    ports: list[int],
    profile: str,
    profile_dir: Path,
    *,
    web: bool,
    interval_s: float,
    batch_size: int | None = None,
) -> tuple[int, str]:
    metrics_port, web_port = free_port(), free_port()
    topic_root = f"load/{scenario.name}"
    text = (
        f'[gateway]\nsite = "bench"\nname = "gw"\nstate_dir = "{path.parent / "state"}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        f'[web]\nenabled = {"true" if web else "false"}\nlisten = "127.0.0.1:{web_port}"\n'
        '[log]\nlevel = "warning"\n'
    )
    if sink == "mqtt":
        text += (
            f'[[sinks]]\ntype = "mqtt"\nhost = "127.0.0.1"\nport = {sink_port}\nmode = "senml"\nqos = 1\n'
            f'topic = "{topic_root}/{{device}}"\n'
        )
        if batch_size:
            text += f"batch_size = {batch_size}\n"
    else:
        text += (
            f'[[sinks]]\ntype = "influxdb"\nurl = "http://127.0.0.1:{sink_port}"\norg = "bench"\n'
            'bucket = "bench"\ngzip = true\n'
        )
        if batch_size:
            text += f"batch_size = {batch_size}\n"
    for i, port in enumerate(ports):
        text += (
            f'[[sources]]\ndriver = "modbus"\nname = "ep{i:03d}"\ntransport = "tcp"\nhost = "127.0.0.1"\n'
            f'port = {port}\ninterval = "{interval_s}s"\ntimeout = "1s"\nprofile_dirs = ["{profile_dir}"]\n'
            f'[[sources.devices]]\nname = "dev{i:03d}"\nunit_id = 1\nprofile = "{profile}"\n'
        )
    path.write_text(text)
    return metrics_port, topic_root + "/#"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def stop_daemon(daemon: subprocess.Popen[bytes], timeout: float) -> float | None:
    """SIGTERM, then SIGKILL after ``timeout``: seconds until it exited, None if it had to be killed.

    Stopping waits for the sources, the last commit and up to 3 s of draining into the sink, with
    the simulators and the broker still up; a daemon that overran its load may take much longer."""
    if daemon.poll() is not None:
        return 0.0
    t0 = time.monotonic()
    daemon.terminate()
    try:
        daemon.wait(timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        return None
    return time.monotonic() - t0


def scrape(url: str) -> dict[str, float]:
    """Sum of each sample name over its labels, and per ``kind``/``type`` label as ``name{value}``."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
            label = s.labels.get("kind") or s.labels.get("type")
            if label:
                key = f"{s.name}{{{label}}}"
                out[key] = out.get(key, 0.0) + s.value
    return out


def run_scenario(
    args: argparse.Namespace, scenario: Scenario, work: Path, server_port: int, server_pid: int
) -> ScenarioResult:
    folder = work / scenario.name
    folder.mkdir()
    log = (folder / "processes.log").open("a")
    sims: list[subprocess.Popen[str]] = []
    counter: subprocess.Popen[str] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    spy: subprocess.Popen[bytes] | None = None
    tracer: subprocess.Popen[bytes] | None = None
    stop_s: float | None = 0.0
    try:
        ports: list[int] = []
        profile = ""
        if scenario.devices:
            profile = write_profile(folder / "profiles", scenario.registers, args.type, args.layout)
            ports = start_simulators(sims, scenario.devices, args.devices_per_sim, profile, folder / "profiles", log)
        metrics_port, topic = write_config(
            folder / "gateway.toml",
            scenario,
            args.sink,
            server_port,
            ports,
            profile,
            folder / "profiles",
            web=args.web,
            interval_s=args.interval,
            batch_size=args.batch_size,
        )
        if args.sink == "mqtt":
            counter = subprocess.Popen(
                [sys.executable, str(HERE / "load_counter.py"), "--port", str(server_port), "--topic", topic,
                 "--out", str(folder / "arrivals.json")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )  # fmt: skip
            assert counter.stdout is not None
            if counter.stdout.readline().strip() != "subscribed":
                raise RuntimeError(f"the counter did not subscribe (see {log.name})")
        vm_url = f"http://127.0.0.1:{server_port}/metrics"
        vm_base = scrape(vm_url).get("vm_rows_inserted_total{influx}", 0.0) if args.sink == "influxdb" else 0.0
        started = time.time()
        env = {**os.environ, "PYTHONPATH": str(args.code)} if args.code else None
        daemon = subprocess.Popen(
            [sys.executable, *_LAUNCH[args.event_loop], "run", "-c", str(folder / "gateway.toml")],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=args.code,
        )  # fmt: skip
        samples: list[Sample] = []
        end = started + args.seconds
        first_vm: float | None = None
        while time.time() < end and daemon.poll() is None:
            now = time.time()
            vm = scrape(vm_url).get("vm_rows_inserted_total{influx}", 0.0) - vm_base if args.sink == "influxdb" else 0
            if vm and first_vm is None:
                first_vm = now
            samples.append(
                Sample(
                    now,
                    cpu_s(daemon.pid),
                    status_kb(daemon.pid, "VmRSS"),
                    sum(cpu_s(p.pid) for p in sims),
                    vm,
                    sum(cpu_s(pid) for pid in ([server_pid, counter.pid] if counter else [server_pid])),
                )
            )
            if args.profile and spy is None and now > started + args.warmup + 1.5 and scenario.devices:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(daemon.pid), "--format",
                     "raw", "--rate", str(args.profile_rate), "--nonblocking", "--duration",
                     str(max(1, int(end - now - 0.5))), "-o", str(folder / "pyspy.txt")],
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            if args.syscalls and tracer is None and now > started + args.warmup + 1.5 and scenario.devices:
                # Counts, not times: strace slows every syscall down, so the CPU figures of this run are off.
                tracer = subprocess.Popen(
                    ["timeout", "-s", "INT", str(max(1, int(end - now - 0.5))), "strace", "-c", "-f", "-p",
                     str(daemon.pid), "-o", str(folder / "syscalls.txt")]
                    if args.syscalls == "strace"
                    else ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(daemon.pid), "-o",
                          str(folder / "perf.data"), "--", "sleep", str(max(1, int(end - now - 0.5)))]
                    if args.syscalls == "record"
                    else ["perf", "stat", "-p", str(daemon.pid), "-o", str(folder / "perf-stat.txt"), "--", "sleep",
                          str(max(1, int(end - now - 0.5)))],
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            # Fine steps until the first value is in, to time the startup; then on every half second of the
            # clock: polls tick on whole seconds, and their values take a while to arrive, so a sample at x.0 s
            # falls between two bursts (the VictoriaMetrics count has no arrival times to choose a better phase).
            time.sleep(0.05 if first_vm is None and args.sink == "influxdb" else 0.5 - time.time() % 0.5)
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode}; see {log.name}")
        peak_kb = status_kb(daemon.pid, "VmHWM")
        gateway_metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        if spy is not None:
            spy.wait(30)
        if tracer is not None:
            tracer.wait(30)
        if daemon is not None:
            stop_s = stop_daemon(daemon, args.stop_timeout)
        for p in sims:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if counter is not None:
            assert counter.stdin is not None
            counter.stdin.close()
            counter.wait(30)
        log.close()
    arrivals = folder / "arrivals.json"
    result = summarise(
        scenario.name,
        offered=scenario.devices * scenario.registers / args.interval,
        started=started,
        samples=samples,
        arrivals=arrivals if arrivals.exists() else None,
        first_vm=first_vm,
        warmup=args.warmup,
        peak_kb=peak_kb,
        sim_processes=len(sims),
        gateway_metrics=gateway_metrics,
    )
    result.stop_s = stop_s
    result.load_average = os.getloadavg()[0]
    if spy is not None and (folder / "pyspy.txt").exists():
        result.profile = top_frames((folder / "pyspy.txt").read_text(), 10)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="idle,10x50,100x50,100x100,100x250,100x500")
    ap.add_argument("--seconds", type=float, default=20.0, help="per scenario, startup included (default 20)")
    ap.add_argument("--warmup", type=float, default=3.0, help="after the first delivered value (default 3)")
    ap.add_argument("--sink", choices=("mqtt", "influxdb"), default="mqtt")
    ap.add_argument("--batch-size", type=int, default=None, help="the sink's batch_size (default: its default)")
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval in s (default 1; startup: 0.1)")
    ap.add_argument("--type", choices=("uint16", "float32"), default="uint16", help="register type (default uint16)")
    ap.add_argument(
        "--layout",
        choices=("channels", "tags"),
        default="channels",
        help="channels of 40 quantities, a tag per channel (default: a frame per channel), or a tag per register",
    )
    ap.add_argument("--devices-per-sim", type=int, default=50, help="endpoints per simulator process (default 50)")
    ap.add_argument(
        "--no-web", dest="web", action="store_false", help="turn the status page off (on by default, as shipped)"
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the daemon over the window; print its top 10")
    ap.add_argument(
        "--syscalls",
        choices=("strace", "perf", "record"),
        help="count the daemon's syscalls (strace -c: slows it down) or its context switches (perf stat)",
    )
    ap.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    ap.add_argument("--stop-timeout", type=float, default=20.0, help="SIGKILL the daemon after this (default 20 s)")
    ap.add_argument("--pause", type=float, default=5.0, help="between two scenarios (default 5 s)")
    ap.add_argument(
        "--event-loop", choices=tuple(_LAUNCH), default="asyncio",
        help="run the daemon on asyncio's loop (as shipped) or on uvloop's (an experiment: pip install uvloop)",
    )  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, arrivals)")
    ap.add_argument(
        "--code", type=Path, default=None, help="run the daemon from this checkout (e.g. a git worktree of a release)"
    )
    args = ap.parse_args()
    scenarios = [Scenario.parse(s.strip()) for s in args.scenarios.split(",") if s.strip()]
    if args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        ap.error("--profile needs py-spy in this environment: .venv/bin/pip install py-spy")
    if args.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        ap.error("--event-loop uvloop needs uvloop in this environment: .venv/bin/pip install uvloop")
    if args.seconds < args.warmup + 3:
        ap.error("--seconds must leave at least 3 s after --warmup")
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    server: Mosquitto | VictoriaMetrics = (Mosquitto if args.sink == "mqtt" else VictoriaMetrics)(work / "server")
    print(
        f"bench_load: sink {args.sink}{' senml qos 1' if args.sink == 'mqtt' else ' -> VictoriaMetrics'}, "
        f"{args.type} registers ({args.layout}), status page {'on' if args.web else 'off'}, {args.interval:g} s polls, "
        f"{args.seconds:g} s per scenario "
        f"{'on uvloop ' if args.event_loop == 'uvloop' else ''}(warm-up {args.warmup:g} s), "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    results = []
    server.start()
    try:
        for i, scenario in enumerate(scenarios):
            if i:
                time.sleep(args.pause)  # let the machine (shared) settle between two loads
            assert server.proc is not None
            results.append(run_scenario(args, scenario, work, server.port, server.proc.pid))
            print(f"  {scenario.name}: done", flush=True)
    finally:
        server.close()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, sink=args.sink)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
