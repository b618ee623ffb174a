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
