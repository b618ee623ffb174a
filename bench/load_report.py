"""Figures and the printed table of bench_load.py, from the samples and arrivals one scenario recorded."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    t: float  # wall clock, s
    cpu_s: float  # daemon user+system, all threads
    rss_kb: int
    sim_cpu_s: float  # all simulator processes
    vm_rows: float  # values VictoriaMetrics has taken in (influxdb sink only)
    server_cpu_s: float  # the broker (and the counting subscriber) or VictoriaMetrics


@dataclass
class ScenarioResult:
    name: str
    offered: float
    window_s: float = 0.0
    delivered_per_s: float | None = None
    cpu_us_per_value: float | None = None
    cores: float = 0.0
    rss_peak_mib: float = 0.0
    rss_first_mib: float = 0.0
    rss_last_mib: float = 0.0
    lat_p50: float | None = None
    lat_p99: float | None = None
    lat_p50_first: float | None = None
    lat_p50_last: float | None = None
    startup_s: float | None = None
    sim_processes: int = 0
    sim_cores: float = 0.0
    server_cores: float = 0.0
    load_average: float = 0.0
    missed_ticks: float = 0.0
    driver_errors: float = 0.0
    pending_at_end: float = 0.0
    unparsed_packs: int = 0
    first_tick_s: float | None = None  # spawn -> the timestamp (aligned poll tick) of the first value delivered
    stop_s: float | None = 0.0  # SIGTERM -> exit; None: killed after --stop-timeout
    error_kinds: dict[str, float] = field(default_factory=dict)
    profile: list[tuple[float, str]] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarise(
    name: str,
    *,
    offered: float,
    started: float,
    samples: list[Sample],
    arrivals: Path | None,
    first_vm: float | None,
    warmup: float,
    peak_kb: int,
    sim_processes: int,
    gateway_metrics: dict[str, float],
) -> ScenarioResult:
    res = ScenarioResult(name, offered, rss_peak_mib=peak_kb / 1024, sim_processes=sim_processes)
    res.missed_ticks = gateway_metrics.get("gateway_poll_missed_ticks_total", 0.0)
    res.driver_errors = gateway_metrics.get("gateway_driver_errors_total", 0.0)
    prefix = "gateway_driver_errors_total{"
    res.error_kinds = {k[len(prefix) : -1]: v for k, v in gateway_metrics.items() if k.startswith(prefix) and v}
    res.pending_at_end = gateway_metrics.get("gateway_sink_pending_readings", 0.0)
    packs: list[tuple[float, int, float]] = []
    if arrivals is not None:
        data = json.loads(arrivals.read_text())
        packs = [(a, n, bt) for a, n, bt in data["packs"]]
        res.unparsed_packs = data["unparsed"]
    first = min((a for a, _, _ in packs), default=None) if arrivals is not None else first_vm
    if first is not None:
        res.startup_s = first - started
    if packs:
        res.first_tick_s = min(packs)[2] - started
    # The window starts after the warm-up (from the first value in, or from the spawn when idle).
    earliest = (first if first is not None else started) + warmup
    w0, w1 = _window(earliest, samples, [a for a, _, _ in packs] if arrivals is not None else None)
    if w1 - w0 < 1:
        return res
    dt = res.window_s = w1 - w0
    cpu = _at(samples, w1, "cpu_s") - _at(samples, w0, "cpu_s")
    res.cores = cpu / dt
    res.sim_cores = (_at(samples, w1, "sim_cpu_s") - _at(samples, w0, "sim_cpu_s")) / dt
    res.server_cores = (_at(samples, w1, "server_cpu_s") - _at(samples, w0, "server_cpu_s")) / dt
    third = dt / 3
    res.rss_first_mib = _mean([s.rss_kb / 1024 for s in samples if w0 <= s.t <= w0 + third])
    res.rss_last_mib = _mean([s.rss_kb / 1024 for s in samples if w1 - third <= s.t <= w1])
    if offered == 0:
        return res
    if arrivals is not None:
        window = [(a, n, a - bt) for a, n, bt in packs if w0 <= a < w1]
        delivered = float(sum(n for _, n, _ in window))
        lat = [x for _, _, x in window]
        if lat:
            res.lat_p50, res.lat_p99 = percentile(lat, 0.5), percentile(lat, 0.99)
            early = [x for a, _, x in window if a <= w0 + third]
            late = [x for a, _, x in window if a >= w1 - third]
            res.lat_p50_first = percentile(early, 0.5) if early else None
            res.lat_p50_last = percentile(late, 0.5) if late else None
    else:
        delivered = _at(samples, w1, "vm_rows") - _at(samples, w0, "vm_rows")
    res.delivered_per_s = delivered / dt
    res.cpu_us_per_value = 1e6 * cpu / delivered if delivered else None
    return res


def _window(earliest: float, samples: list[Sample], arrivals: list[float] | None) -> tuple[float, float]:
    """A whole number of poll periods after ``earliest``, both ends at the sub-second phase with fewest arrivals.

    Under a light load values reach the broker in one burst per poll; a window whose ends cut a burst
    would count 0.5 s of it too many or too few. When the arrivals are known the ends go where
    the clock phase has the fewest of them; otherwise (VictoriaMetrics' counter, read every 0.5 s)
    they are samples taken at a poll tick (x.0 s), so nothing is interpolated across a jump.
    """
    last = samples[-1].t if samples else earliest
    if arrivals:
        bins = Counter(int(a % 1 * 20) for a in arrivals if a >= earliest)
        phase = (min(range(20), key=lambda b: bins[b]) + 0.5) / 20
        w0 = int(earliest) + phase
        w0 += 1 if w0 < earliest else 0
        return w0, w0 + int(last - w0) if last > w0 else w0
    inside = [s.t for s in samples if s.t >= earliest]
    # The sampler wakes on x.0 and x.5 s; at x.0 a poll has just started and its values are not in yet.
    bounds = [t for t in inside if t % 1 < 0.3]
    if len(bounds) >= 2:
        return bounds[0], bounds[-1]
    return (inside[0], inside[-1]) if len(inside) >= 2 else (earliest, earliest)


def _at(samples: list[Sample], t: float, attr: str) -> float:
    """A cumulative figure at time ``t``, linearly interpolated between the samples around it."""
    before = max((s for s in samples if s.t <= t), key=lambda s: s.t, default=samples[0])
    after = min((s for s in samples if s.t >= t), key=lambda s: s.t, default=samples[-1])
    v0, v1 = float(getattr(before, attr)), float(getattr(after, attr))
    if after.t == before.t:
        return v0
    return v0 + (v1 - v0) * (t - before.t) / (after.t - before.t)


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(results: list[ScenarioResult], *, sink: str) -> None:
    lat_head = "latency p50/p99 s  p50 trend" if sink == "mqtt" else "latency"
    print()
    print(
        f"{'scenario':<9} {'offered/s':>9} {'delivered/s':>11} {'us/value':>8} {'cores':>5} "
        f"{'RSS peak':>8} {'RSS trend MiB':>13} {lat_head:>28} {'startup':>7} {'sim cores':>11} "
        f"{'server':>6} {'missed':>6} {'errors':>6} {'pending':>7} {'stop s':>6} {'load':>4}"
    )
    for r in results:
        lat = "-"
        if r.lat_p50 is not None:
            lat = f"{r.lat_p50:.3f}/{r.lat_p99:.3f}  {_f(r.lat_p50_first, '.3f')}->{_f(r.lat_p50_last, '.3f')}"
        sim = f"{r.sim_cores:.2f} ({r.sim_processes})" if r.sim_processes else "-"
        stop = "killed" if r.stop_s is None else f"{r.stop_s:.1f}"
        print(
            f"{r.name:<9} {r.offered:>9,.0f} {_f(r.delivered_per_s, ',.0f'):>11} {_f(r.cpu_us_per_value, '.1f'):>8} "
            f"{r.cores:>5.3f} {r.rss_peak_mib:>8.1f} {f'{r.rss_first_mib:.1f}->{r.rss_last_mib:.1f}':>13} "
            f"{lat:>28} {_f(r.startup_s, '.2f'):>7} {sim:>11} {r.server_cores:>6.2f} {r.missed_ticks:>6.0f} "
            f"{r.driver_errors:>6.0f} {r.pending_at_end:>7,.0f} {stop:>6} {r.load_average:>4.1f}"
        )
    print(
        "us/value and cores: the daemon's CPU (all threads) over the window; RSS peak = VmHWM; trend = mean RSS of the "
        "window's first third -> last third;\nlatency: poll tick (the reading's timestamp) -> arrival at the broker; "
        "startup: daemon spawned -> first value delivered; missed: poll ticks skipped (overrun);\nerrors: driver "
        "errors; pending: readings the sink had not acknowledged when the run ended (a growing lag shows here);\n"
        "sim cores (processes) and server: CPU of the simulators and of the broker plus the counting subscriber (or "
        "VictoriaMetrics), in cores;\nstop s: SIGTERM -> exit (the simulators and the broker still up); "
        "load: the machine's 1-minute load average after the scenario (other work competes for the CPUs)."
    )
    for r in results:
        if r.window_s and r.window_s < 5:
            print(f"note: {r.name}: the window was only {r.window_s:.1f} s")
        if r.first_tick_s is not None and r.startup_s is not None:
            print(
                f"note: {r.name}: startup {r.startup_s:.2f} s = {r.first_tick_s:.2f} s from spawn to the first "
                f"delivered value's poll tick + {r.startup_s - r.first_tick_s:.2f} s from that tick to the broker"
            )
        if r.stop_s is None:
            print(f"note: {r.name}: the daemon did not stop after SIGTERM within --stop-timeout: killed (SIGKILL)")
        elif r.stop_s > 5:
            print(f"note: {r.name}: the daemon took {r.stop_s:.1f} s to stop after SIGTERM")
        if r.error_kinds:
            kinds = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.error_kinds.items()))
            print(f"note: {r.name}: driver errors by kind: {kinds}")
        if r.unparsed_packs:
            print(f"note: {r.name}: {r.unparsed_packs} messages at the broker were not SenML packs")
        if r.profile:
            print(f"\npy-spy, {r.name}: top functions, then modules, by own time (share of the daemon's samples)")
            for share, frame in r.profile:
                print(f"  {100 * share:5.1f}%  {frame}")


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3.", "wt-loadbench/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[-1]
    return f"{m['func']} ({path})"


def _module(frame: str) -> str:
    """``func (path)`` -> the package (third-party), our file, or the standard module it belongs to."""
    m = _FRAME.match(_short(frame))
    if not m:
        return frame
    path = m["file"]
    if path.startswith(("gateway/", "drivers/", "simulators/")) or "/" not in path:
        return path
    return path.split("/", 1)[0]


def top_frames(raw: str, n: int) -> list[tuple[float, str]]:
    """py-spy's raw (collapsed) output -> the ``n`` functions with most own samples, then the ``n`` modules
    with most own samples (which stage the time goes to), as (share, name)."""
    own: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        leaf = stack.split(";")[-1]
        own[_short(leaf)] += int(count)
        modules["module " + _module(leaf)] += int(count)
    if not total:
        return []
    return [(c / total, name) for name, c in own.most_common(n) + modules.most_common(n)]
