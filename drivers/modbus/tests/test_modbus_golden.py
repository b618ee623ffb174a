"""Golden cases as data: testcases/<case>/config.toml (+ [simulator] registers) -> expected.jsonl."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.simulators.modbus.device import SimulatedDevice
from gateway.simulators.modbus.harness import running_driver
from gateway.simulators.modbus.server import ModbusSimulator

from gateway.config import build_config
from gateway.model import Reading

CASES = sorted(p for p in (Path(__file__).resolve().parent.parent / "testcases").iterdir() if p.is_dir())


def _simulator(spec: dict[str, Any]) -> ModbusSimulator:
    devices = {}
    for unit in spec["units"]:
        fixed = {table: {int(a): int(w) for a, w in pairs} for table, pairs in unit.get("registers", {}).items()}
        devices[unit["unit_id"]] = SimulatedDevice(
            unit["unit_id"], [], fixed=fixed, strict_addresses=unit.get("strict_addresses", False)
        )
    return ModbusSimulator(devices)


def _key(r: dict[str, Any]) -> tuple[str, str, str]:
    return r["device"], r["quantity"], json.dumps(r["tags"], sort_keys=True)


def _as_dict(r: Reading) -> dict[str, Any]:
    return {
        "device": r.device, "quantity": r.quantity, "value": r.value, "unit": r.unit,
        "tags": dict(r.tags), "quality": r.quality.name,
    }  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_golden_case(case: Path) -> None:
    raw = tomllib.loads((case / "config.toml").read_text())
    sim = _simulator(raw.pop("simulator"))
    # the case's config must be a config `gateway check` accepts
    (loaded,) = build_config(raw, source=str(case / "config.toml")).sources
    assert isinstance(loaded.config, ModbusSourceConfig)
    expected = [json.loads(line) for line in (case / "expected.jsonl").read_text().splitlines() if line.strip()]
    port = await sim.serve_tcp(rtu_framing=loaded.config.transport == "rtu_over_tcp")
    source = loaded.config.model_copy(update={"port": port})
    try:
        async with running_driver(source) as run:
            assert run.driver.scheduler is not None
            await run.wait_for(lambda: all(s.polls >= 1 for s in run.driver.scheduler.slots))  # type: ignore[union-attr]
    finally:
        await sim.close()
    first_ts = min(r.ts_ns for r in run.readings)
    got = {_key(d): d for d in (_as_dict(r) for r in run.readings if r.ts_ns == first_ts)}
    assert set(got) == {_key(e) for e in expected}
    for e in expected:
        g = got[_key(e)]
        if isinstance(e["value"], float):
            assert g["value"] == pytest.approx(e["value"], rel=1e-6), e
            assert {**g, "value": 0} == {**e, "value": 0}
        else:
            assert g == e
