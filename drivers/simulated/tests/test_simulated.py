"""The simulated driver: plausible values per kind, and gap-checkable sequences."""

from __future__ import annotations

import itertools
import logging

import pytest
from gateway.drivers.simulated.driver import SimulatedConfig, SimulatedDriver

from gateway.driver import DriverContext
from gateway.quantities import QUANTITIES


def driver(**config: object) -> SimulatedDriver:
    cfg = SimulatedConfig.model_validate({"name": "sim", "interval": "1s", **config})
    ctx = DriverContext(site="s", gateway="g", source="sim", driver="simulated", logger=logging.getLogger("t"))
    return SimulatedDriver(cfg, ctx)


async def test_sequence_values_count_up_with_distinct_increasing_millisecond_timestamps() -> None:
    # Polls back to back (far closer than readings_per_poll ms apart), as after a late tick.
    d = driver(devices=[{"name": "c", "kind": "sequence"}], readings_per_poll=20)
    readings = [r for _ in range(5) for r in await d.poll()]
    assert [r.value for r in readings] == list(range(100))
    ms = [r.ts_ns // 1_000_000 for r in readings]
    assert all(b > a for a, b in itertools.pairwise(ms))
    assert {r.tags["run"] for r in readings} == {d.run_id}


@pytest.mark.parametrize("kind", ["weather", "air", "energy"])
async def test_each_kind_emits_canonical_quantities_in_canonical_units(kind: str) -> None:
    d = driver(devices=[{"name": "x", "kind": kind}], seed=1)
    readings = await d.poll()
    assert readings
    for r in readings:
        assert r.quantity in QUANTITIES
        assert r.unit == QUANTITIES[r.quantity].unit


async def test_fail_every_raises_on_every_nth_poll() -> None:
    d = driver(devices=[{"name": "x"}], fail_every=3)
    outcomes = []
    for _ in range(6):
        try:
            await d.poll()
            outcomes.append("ok")
        except RuntimeError:
            outcomes.append("fail")
    assert outcomes == ["ok", "ok", "fail", "ok", "ok", "fail"]


def test_duplicate_device_names_are_a_config_error() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SimulatedDriver.validate(SimulatedConfig.model_validate(
            {"name": "sim", "devices": [{"name": "a"}, {"name": "a"}]}))  # fmt: skip
