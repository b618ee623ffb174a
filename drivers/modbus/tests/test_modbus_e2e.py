"""End to end: the driver against the simulator over TCP, RTU over TCP and RTU on a pty,
and against pymodbus' own server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.model import Quality
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.harness import running_driver
from gateway.simulators.modbus.server import ModbusSimulator

# Raw registers from the worked frames of docs/protocols.md#6-modbus-devices.
SDM_FIXED = {"input": {0x00: 0x4366, 0x01: 0x199A, 0x48: 0x4640, 0x49: 0xE6AE}}  # 230.1 V, 12345.67 kWh
MD02_FIXED = {"input": {0x01: 0x0131, 0x02: 0x0222}}  # 30.5 °C, 54.6 %RH


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    devices = devices_from_profiles({1: "eastron-sdm630", 2: "xy-md02"})
    devices[1].fixed = SDM_FIXED
    devices[2].fixed = MD02_FIXED
    simulator = ModbusSimulator(devices)
    yield simulator
    await simulator.close()


async def _line(sim: ModbusSimulator, transport: str) -> dict[str, Any]:
    if transport == "rtu":
        return {"transport": "rtu", "port": await sim.serve_pty()}
    port = await sim.serve_tcp(rtu_framing=transport == "rtu_over_tcp")
    return {"transport": transport, "host": "127.0.0.1", "port": port}


def _source(line: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "driver": "modbus",
        "name": "bus",
        "interval": 0.2,
        "timeout": 0.5,
        **line,
        "devices": [
            {"name": "meter", "unit_id": 1, "profile": "eastron-sdm630", "tags": {"building": "hall"}},
            {"name": "climate", "unit_id": 2, "profile": "xy-md02"},
        ],
        **extra,
    }


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp", "rtu"])
async def test_profiles_end_to_end(sim: ModbusSimulator, transport: str) -> None:
    async with running_driver(_source(await _line(sim, transport))) as run:
        await run.wait_for(lambda: len(run.of("meter")) >= 42 and len(run.of("climate")) >= 4)
    voltage_l1 = [r for r in run.of("meter", "voltage") if r.tags.get("phase") == "L1"]
    assert voltage_l1[0].value == pytest.approx(230.1, rel=1e-6)
    assert voltage_l1[0].unit == "V" and voltage_l1[0].tags == {"building": "hall", "phase": "L1"}
    assert run.of("meter", "energy_import")[0].value == pytest.approx(12345.67, rel=1e-6)
    assert run.of("climate", "temperature")[0].value == pytest.approx(30.5)
    assert run.of("climate", "relative_humidity")[0].value == pytest.approx(54.6)
    # simulated (not pinned) fields are plausible and good
    freq = run.of("meter", "frequency")[0]
    assert 49.9 <= float(freq.value) <= 50.1 and freq.quality == Quality.GOOD
    # aligned ticks: after each device's first poll (at once, stamped when read) every timestamp sits on the
    # 200 ms grid
    for device in ("meter", "climate"):
        _first, *later = sorted({r.ts_ns for r in run.of(device)})
        assert later and all(ts % 200_000_000 == 0 for ts in later), (device, later)
    # coalescing: 4 requests per SDM630 poll, 1 per XY-MD02 poll
    assert run.driver.scheduler is not None
    meter_slot = next(s for s in run.driver.scheduler.slots if s.name == "meter")
    assert sim.stats.per_unit[1] == 4 * meter_slot.polls
    assert not run.errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_against_pymodbus_own_server() -> None:
    port = _free_port()
    # pymodbus' current datastore API (SimData/SimDevice); one shared block serves FC 03 and 04
    device = SimDevice(
        id=5,
        simdata=[
            SimData(address=0, values=[230.1], datatype=DataType.FLOAT32),
            SimData(address=2, count=4, values=0, datatype=DataType.REGISTERS),
            SimData(address=6, values=[-205], datatype=DataType.INT16),
            SimData(address=7, values=[0x0222], datatype=DataType.REGISTERS),
        ],
    )
    server = ModbusTcpServer(context=device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        source = {
            "driver": "modbus", "name": "pm", "interval": 0.2, "host": "127.0.0.1", "port": port,
            "devices": [{"name": "d", "unit_id": 5, "registers": [
                {"quantity": "voltage", "table": "holding", "address": 0, "type": "float32"},
                {"quantity": "temperature", "table": "input", "address": 6, "type": "int16", "scale": 0.1},
                {"quantity": "relative_humidity", "table": "input", "address": 7, "scale": 0.1},
            ]}],
        }  # fmt: skip
        async with running_driver(source) as run:
            await run.wait_for(lambda: len(run.readings) >= 3)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
    got = {r.quantity: r.value for r in run.readings[:3]}
    assert got["voltage"] == pytest.approx(230.1, rel=1e-6)
    assert got["temperature"] == pytest.approx(-20.5)
    assert got["relative_humidity"] == pytest.approx(54.6)


async def test_simulated_values_change_over_time(sim: ModbusSimulator) -> None:
    device = sim.devices[1]
    device.fixed = {}
    a = device.read("input", 0x48, 2)
    await asyncio.sleep(0.05)
    device.started -= 3600  # an hour later the import counter has grown
    b = device.read("input", 0x48, 2)
    assert a is not None and b is not None and a != b
