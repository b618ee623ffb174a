"""A source's status (status.json, `gateway status`, the status page): every field, with a Modbus bus.

SourceSupervisor.status and ModbusDriver.status are built once a second for every source; they are
written directly for speed, so this pins what they must keep saying.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.buffer import AsyncBuffer
from gateway.config import LoadedSource
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.driver import ModbusDriver
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.server import ModbusSimulator
from gateway.supervisor import SourceSupervisor
from gateway.writer import BufferWriter


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[tuple[SourceSupervisor, int]]:
    """A Modbus source with a meter that answers (unit 1) and one that is not there (unit 9)."""
    simulator = ModbusSimulator(devices_from_profiles({1: "xy-md02"}))
    port = await simulator.serve_tcp()
    cfg = ModbusSourceConfig.model_validate({
        "driver": "modbus", "name": "bus", "transport": "tcp", "host": "127.0.0.1", "port": port,
        "interval": 0.2, "timeout": 0.2,
        "devices": [{"name": "meter", "unit_id": 1, "profile": "xy-md02"},
                    {"name": "ghost", "unit_id": 9, "profile": "xy-md02"}],
    })  # fmt: skip
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite", max_bytes=10**8, overflow="drop_oldest", sync="normal")
    writer = BufferWriter(buffer, flush_interval_s=0.05, flush_max_readings=10_000)
    writer_task = asyncio.create_task(writer.run())
    supervisor = SourceSupervisor(
        LoadedSource(cfg, ModbusDriver), site="s", gateway="g", state_dir=str(tmp_path), writer=writer, metrics=None
    )
    source_task = asyncio.create_task(supervisor.run())
    try:
        yield supervisor, port
    finally:
        for task in (source_task, writer_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await buffer.close()
        await simulator.close()


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_modbus_source_status_keeps_every_field(bus: tuple[SourceSupervisor, int]) -> None:
    supervisor, port = bus
    await _until(lambda: supervisor.status()["devices_down"] == ["ghost"] and supervisor.readings_total > 0)
    status = supervisor.status()
    assert list(status) == ["driver", "state", "error", "restarts", "readings", "polls", "poll_seconds_total",
                            "devices_down", "down_reasons", "detail"]  # fmt: skip
    assert status["driver"] == "modbus" and status["state"] == "running" and status["error"] is None
    assert status["restarts"] == 0 and status["readings"] == supervisor.readings_total > 0
    assert isinstance(status["polls"], int) and isinstance(status["poll_seconds_total"], float)
    assert list(status["down_reasons"]) == ["ghost"] and status["down_reasons"]["ghost"]
    detail = status["detail"]
    assert list(detail) == ["endpoint", "connected", "devices"]
    assert detail["endpoint"] == f"127.0.0.1:{port}" and detail["connected"] is True
    assert list(detail["devices"]) == ["meter", "ghost"]
    meter, ghost = detail["devices"]["meter"], detail["devices"]["ghost"]
    assert meter["up"] is True and meter["polls"] >= 1 and meter["missed_ticks"] >= 0 and list(meter) == [
        "up", "polls", "missed_ticks",
    ]  # fmt: skip
    assert ghost["up"] is False
    # a fresh document each call: one a caller keeps does not change under it (else this never ends)
    before = supervisor.status()
    polls = before["detail"]["devices"]["meter"]["polls"]
    await _until(lambda: supervisor.status()["detail"]["devices"]["meter"]["polls"] > polls)
    assert before["detail"]["devices"]["meter"]["polls"] == polls


async def test_a_driver_whose_status_fails_leaves_the_rest_of_the_source_status(
    bus: tuple[SourceSupervisor, int],
) -> None:
    supervisor, _ = bus
    await _until(lambda: supervisor.driver is not None)

    def broken() -> dict[str, Any]:
        raise RuntimeError("a driver bug")

    assert supervisor.driver is not None
    supervisor.driver.status = broken  # type: ignore[method-assign]
    status = supervisor.status()
    assert "detail" not in status and status["state"] == "running" and status["driver"] == "modbus"
