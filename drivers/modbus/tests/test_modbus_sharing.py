"""Devices of one profile share what is read-only: a field of a device once cost ~250 bytes of memory."""

from __future__ import annotations

import logging

from gateway.driver import DriverContext
from gateway.drivers.modbus.bus import Bus
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.devices import resolve_devices
from gateway.drivers.modbus.poller import DevicePoller


def _source(devices: list[dict[str, object]]) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate(
        {"driver": "modbus", "name": "bus", "transport": "tcp", "host": "127.0.0.1", "port": 1502, "devices": devices}
    )


async def test_devices_of_one_profile_share_fields_plan_tags_and_decoders() -> None:
    cfg = _source([
        {"name": "m1", "unit_id": 1, "profile": "eastron-sdm630"},
        {"name": "m2", "unit_id": 2, "profile": "eastron-sdm630"},
        {"name": "m3", "unit_id": 3, "profile": "eastron-sdm630",
         "registers": [{"quantity": "temperature", "address": 900}]},
    ])  # fmt: skip
    m1, m2, m3 = resolve_devices(cfg)
    assert m1.fields is m2.fields and m1.spans is m2.spans and m1.plan is m2.plan
    assert m3.fields is not m1.fields and len(m3.fields) == len(m1.fields) + 1  # its own register: its own plan
    ctx = DriverContext(site="s", gateway="g", source="bus", driver="modbus", logger=logging.getLogger("t"))
    bus = Bus(cfg)
    p1, p2 = DevicePoller(m1, bus, ctx), DevicePoller(m2, bus, ctx)
    assert all(a is b for a, b in zip(p1.field_tags, p2.field_tags, strict=True))
    phases = {t.get("phase") for t in p1.field_tags}
    assert {"L1", "L2", "L3"} <= phases
    assert p1._block(m1.plan[0]) is p2._block(m2.plan[0])
    p1.plan.pop()  # a poller's plan is its own copy (a refused read is split per device)
    assert len(p2.plan) == len(m2.plan)


async def test_devices_of_one_profile_and_tags_share_their_frame_layout_and_assemblies() -> None:
    """A 500-field profile once cost ~30 kB per device in per-field lists, tag groups and pickers."""
    cfg = _source([
        {"name": "m1", "unit_id": 1, "profile": "eastron-sdm630"},
        {"name": "m2", "unit_id": 2, "profile": "eastron-sdm630"},
        {"name": "m3", "unit_id": 3, "profile": "eastron-sdm630", "tags": {"building": "hall"}},
    ])  # fmt: skip
    m1, m2, m3 = resolve_devices(cfg)
    ctx = DriverContext(site="s", gateway="g", source="bus", driver="modbus", logger=logging.getLogger("t"))
    bus = Bus(cfg)
    p1, p2, p3 = (DevicePoller(m, bus, ctx) for m in (m1, m2, m3))
    assert p1.groups is p2.groups and p1.quantities is p2.quantities and p1.units is p2.units
    blocks = tuple(p1._block(req) for req in m1.plan)
    values = tuple(float(i) for i in range(sum(len(b.indexes) for b in blocks)))
    a1 = p1._frames(1, [(b, values[: len(b.indexes)], None) for b in blocks])[0]  # builds and caches the assembly
    assert p2._assemblies is p1._assemblies and p1._assemblies.get(blocks) is not None  # one for both
    # another tag set is another layout: its frames carry its own tags
    assert p3.groups is not p1.groups and p3._assemblies is not p1._assemblies
    a3 = p3._frames(1, [(b, values[: len(b.indexes)], None) for b in blocks])[0]
    assert all(f.tags.get("building") == "hall" for f in a3) and not any("building" in f.tags for f in a1)
    assert [f.fields for f in a3] == [f.fields for f in a1]  # the same quantities and units
