"""A fleet on one machine: 20 gateway processes, one Mosquitto, one VictoriaMetrics (issue 13).

No series collision, every point delivered, every status right, a kill -9 told apart from a clean
stop, a duplicate name detected by both boxes and by `gateway fleet`.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.fleet import cli as fleet_cli
from tests import fleet_harness as fh
from tests.servers import Mosquitto, VictoriaMetrics
from tests.test_e2e_faults import committed_in_buffer

pytestmark = pytest.mark.slow

N = 20
NOT_HERE = "clock not synchronised"  # the test machine may have no NTP; that problem is true, not the test's


def fleet_rows(port: int) -> dict[tuple[str, str], dict[str, object]]:
    docs = asyncio.run(fleet_cli.collect("127.0.0.1", port, "gateway-fleet/v1", wait_s=5))
    return {(str(r["name"]), str(r["id"])): r for r in fleet_cli.rows(docs.values())}


def test_twenty_gateways_one_broker_one_store(tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    names = [f"gw-{i:02d}" for i in range(N)]
    cfgs = {n: fh.gateway_config(tmp_path / n, n, vm_url=victoria.url, mqtt_port=mosquitto.port) for n in names}
    clone = fh.gateway_config(tmp_path / "clone", "gw-00", vm_url=victoria.url, mqtt_port=mosquitto.port)
    procs: dict[str, subprocess.Popen[bytes]] = {n: fh.start(c) for n, c in cfgs.items()}
    procs["clone"] = fh.start(clone)
    cfgs_all = {**cfgs, "clone": clone}
    try:
        fh.wait(lambda: all(fh.publishing(c) for c in cfgs_all.values()), 90, "every gateway publishing")
        ids = {n: fh.status(c)["identity"] for n, c in cfgs_all.items()}
        assert len(set(ids.values())) == N + 1  # every box its own identity
        # the duplicate name: both boxes say so, in their status (and so in `gateway status`)
        fh.wait(
            lambda: all((fh.status(cfgs_all[n]).get("fleet") or {}).get("duplicate") for n in ("gw-00", "clone")),
            30,
            "both gw-00 boxes to report the duplicate name",
        )
        assert not any((fh.status(cfgs[n]).get("fleet") or {}).get("duplicate") for n in names[1:])
        assert "ANOTHER GATEWAY IS RUNNING UNDER THIS NAME" in fh.log_text(clone)

        rows = fleet_rows(mosquitto.port)
        assert len(rows) == N + 1
        for (name, _), row in rows.items():
            problems = [p for p in row["problems"] if p != NOT_HERE]  # type: ignore[attr-defined]
            assert row["state"] == "online"
            if name == "gw-00":
                assert problems and problems[0].startswith("another gateway uses this name"), problems
            else:
                assert problems == [], (name, problems)

        # kill -9 one, stop one cleanly: the control post tells them apart
        committed_before_kill = committed_in_buffer(cfgs["gw-01"].parent / "state" / "buffer.sqlite")
        procs["gw-01"].send_signal(signal.SIGKILL)
        procs["gw-01"].wait()
        assert fh.stop(procs["gw-02"]) == 0
        assert fh.stop(procs.pop("clone")) == 0

        def told_apart() -> bool:
            rows = fleet_rows(mosquitto.port)
            return (
                rows[("gw-01", ids["gw-01"][:8])]["state"] == "offline"
                and rows[("gw-02", ids["gw-02"][:8])]["state"] == "stopped"
            )

        fh.wait(told_apart, 30, "gw-01 offline (Last Will) and gw-02 stopped")
        # the clone stopped: gw-00's alarm ends without flapping back
        fh.wait(lambda: not (fh.status(cfgs["gw-00"]).get("fleet") or {}).get("duplicate"), 40, "the alarm to end")

        # the killed box restarts and sends what it had committed
        procs["gw-01"] = fh.start(cfgs["gw-01"])
        pid = procs["gw-01"].pid
        fh.wait(lambda: fh.status(cfgs["gw-01"]).get("pid") == pid and fh.publishing(cfgs["gw-01"]), 60, "gw-01 back")
        for name, proc in procs.items():
            if proc.poll() is None:
                assert fh.stop(proc) == 0, fh.log_text(cfgs_all[name])[-2000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    # every point delivered, no collision: each gateway's counter series holds exactly what it counted
    for name in names[1:]:
        series = victoria.export(f'{{__name__="sequence_value",gateway="{name}"}}')
        runs: dict[str, list[int]] = {}
        for s in series:
            runs.setdefault(s["metric"]["run"], []).extend(int(v) for v in s["values"])  # type: ignore[index,union-attr]
        assert runs, name
        for run, values in runs.items():
            assert sorted(values) == list(range(len(values))), f"{name} run {run}: gap or duplicate"
        if name == "gw-01":
            stored = {(run, v) for run, values in runs.items() for v in values}
            assert committed_before_kill <= stored
        else:  # stopped cleanly: the sink acknowledged everything before the process ended
            assert fh.status(cfgs[name])["buffer"]["readings"] == 0, name
        health = victoria.export(f'{{__name__="uptime_value",gateway="{name}",device="_gateway"}}')
        assert health, f"{name}: no health readings in the store"
    series = victoria.export('{__name__="sequence_value"}')
    assert {s["metric"]["gateway"] for s in series} == set(names)  # type: ignore[index]
