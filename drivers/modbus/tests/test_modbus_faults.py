"""Every simulator fault knob, and what the driver makes of it."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.harness import running_driver
from gateway.simulators.modbus.server import ModbusSimulator

# 30.5 °C, 54.6 %RH (docs/protocols.md#6b-xy-md02-class-rs-485-temperature-and-humidity-sensors)
MD02 = {"input": {0x01: 0x0131, 0x02: 0x0222}}


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    devices = devices_from_profiles({1: "xy-md02", 2: "xy-md02", 3: "xy-md02", 4: "eastron-sdm630"})
    for unit in (1, 2, 3):
        devices[unit].fixed = MD02
    simulator = ModbusSimulator(devices, seed=1)
    yield simulator
    await simulator.close()


def _source(line: dict[str, Any], units: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "driver": "modbus", "name": "bus", "interval": 0.2, "timeout": 0.15, "retries": 1, **line,
        "devices": [
            {"name": f"u{u}", "unit_id": u, "profile": "eastron-sdm630" if u == 4 else "xy-md02"} for u in units
        ],
        **extra,
    }  # fmt: skip


async def _tcp(sim: ModbusSimulator, rtu: bool = False) -> dict[str, Any]:
    port = await sim.serve_tcp(rtu_framing=rtu)
    return {"transport": "rtu_over_tcp" if rtu else "tcp", "host": "127.0.0.1", "port": port}


async def test_timeout_is_retried_and_counted(sim: ModbusSimulator) -> None:
    sim.fault(1).timeout_next = 1
    async with running_driver(_source(await _tcp(sim), [1])) as run:
        await run.wait_for(lambda: len(run.of("u1", "temperature")) >= 2)
    assert run.errors["timeout"] == 1
    assert run.of("u1", "temperature")[0].value == pytest.approx(30.5)
    assert ("u1", False) not in run.transitions  # one retried timeout does not make a device dead


async def test_busy_answer_is_retried(sim: ModbusSimulator) -> None:
    sim.fault(1).busy_next = 1
    async with running_driver(_source(await _tcp(sim), [1])) as run:
        await run.wait_for(lambda: len(run.of("u1")) >= 2)
    assert run.errors["device_busy"] == 1
    assert "exception_response" not in run.errors
    assert sim.stats.per_unit[1] >= 2  # the busy answer plus the retry


@pytest.mark.parametrize("transport", ["rtu_over_tcp", "rtu"])
async def test_corrupted_crc_is_counted_and_retried(sim: ModbusSimulator, transport: str) -> None:
    sim.fault(1).corrupt_next = 1
    line = (
        await _tcp(sim, rtu=True)
        if transport == "rtu_over_tcp"
        else {"transport": "rtu", "port": await sim.serve_pty()}
    )
    async with running_driver(_source(line, [1])) as run:
        await run.wait_for(lambda: len(run.of("u1", "temperature")) >= 1)
    assert run.errors["bad_crc"] == 1
    assert run.of("u1", "temperature")[0].value == pytest.approx(30.5)


async def test_exception_response_loses_only_that_device_fields(sim: ModbusSimulator) -> None:
    sim.fault(2).exception = 4  # device failure on every request of unit 2
    async with running_driver(_source(await _tcp(sim), [1, 2])) as run:
        await run.wait_for(lambda: len(run.of("u1")) >= 4 and run.errors["exception_response"] >= 2)
    assert not run.of("u2")
    assert ("u2", False) not in run.transitions  # it answers, so it is not dead


async def test_refused_coalesced_read_is_split_and_loses_one_field(sim: ModbusSimulator) -> None:
    # frequency (0x46) refuses to be read: the 0x46..0x4F request is split, the other fields survive
    sim.fault(4).exception_addresses = {0x46}
    async with running_driver(_source(await _tcp(sim), [4], timeout=0.5)) as run:
        await run.wait_for(lambda: len(run.of("u4")) >= 40)
    first_poll = {(r.quantity, r.tags.get("phase")) for r in run.of("u4") if r.ts_ns == run.of("u4")[0].ts_ns}
    assert len(first_poll) == 20 and ("frequency", None) not in first_poll
    assert ("energy_import", None) in first_poll
    assert run.errors["request_split"] == 1  # split once, remembered afterwards
    assert run.driver.scheduler is not None
    assert len(run.driver.scheduler.slots[0].poller.plan) == 4 - 1 + 5


async def test_slow_answer_within_the_timeout(sim: ModbusSimulator) -> None:
    sim.fault(1).delay_s = 0.1  # timeout is 0.15 s
    async with running_driver(_source(await _tcp(sim), [1])) as run:
        await run.wait_for(lambda: len(run.of("u1")) >= 4)
    assert not run.errors


async def test_slow_answer_beyond_the_timeout(sim: ModbusSimulator) -> None:
    sim.fault(1).delay_s = 0.3
    async with running_driver(_source(await _tcp(sim), [1])) as run:
        await run.wait_for(lambda: ("u1", False) in run.transitions, timeout=5)
    assert not run.of("u1")
    assert run.errors["timeout"] == 2  # first try and one retry
    assert "bad_crc" not in run.errors


async def test_dead_device_logged_once_and_recovers(sim: ModbusSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sim.fault(2).silent = True
    async with running_driver(_source(await _tcp(sim), [1, 2], backoff_max=0.4)) as run:
        await run.wait_for(lambda: len(run.of("u1")) >= 12)
        sim.fault(2).silent = False
        await run.wait_for(lambda: len(run.of("u2")) >= 2, timeout=5)
    down = [r for r in caplog.records if "u2 is not answering" in r.getMessage()]
    up = [r for r in caplog.records if "u2 is answering again" in r.getMessage()]
    assert len(down) == 1 and len(up) == 1
    assert not any("No response received" in r.getMessage() for r in caplog.records)  # pymodbus noise filtered


@pytest.mark.slow
async def test_dead_device_on_shared_line_does_not_delay_the_others(sim: ModbusSimulator) -> None:
    sim.fault(2).silent = True
    line = {"transport": "rtu", "port": await sim.serve_pty()}
    async with running_driver(_source(line, [1, 2, 3], interval=0.25, timeout=0.1, backoff_max=2)) as run:
        await run.wait_for(lambda: len(run.of("u1", "temperature")) >= 8, timeout=6)
    for name in ("u1", "u3"):
        _first, *ticks = sorted({r.ts_ns for r in run.of(name, "temperature")})  # the first poll is off the grid
        steps = {b - a for a, b in itertools.pairwise(ticks)}
        assert steps == {250_000_000}, f"{name} missed ticks: {steps}"
    polls_of_dead = sim.stats.per_unit[2]
    # 2 s of 250 ms ticks = 8 ticks; with retries=1 every tick would cost 2 requests.
    assert polls_of_dead <= 8, polls_of_dead


async def test_tcp_disconnect_reconnects(sim: ModbusSimulator, caplog: pytest.LogCaptureFixture) -> None:
    async with running_driver(_source(await _tcp(sim), [1])) as run:
        await run.wait_for(lambda: len(run.of("u1")) >= 2)
        assert sim.disconnect_clients() == 1
        before = len(run.of("u1"))
        await run.wait_for(lambda: len(run.of("u1")) >= before + 4, timeout=5)
    assert len(sim._writers) <= 1


async def test_endpoint_down_at_start_then_up(sim: ModbusSimulator, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = {"transport": "tcp", "host": "127.0.0.1", "port": port}
    async with running_driver(_source(line, [1])) as run:
        await run.wait_for(lambda: run.errors["connection_lost"] >= 2, timeout=5)
        await sim.serve_tcp(port=port)
        await run.wait_for(lambda: len(run.of("u1")) >= 2, timeout=8)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("is unavailable" in m for m in msgs) == 1
    assert sum("is back" in m for m in msgs) == 1


@pytest.mark.slow
async def test_serial_adapter_unplug_and_replug(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # /dev/serial/by-id style: a stable symlink to whatever tty the adapter gets
    link = tmp_path / "ttyRS485"
    first = ModbusSimulator(devices_from_profiles({1: "xy-md02"}))
    link.symlink_to(await first.serve_pty())
    line = {"transport": "rtu", "port": str(link)}
    second = ModbusSimulator(devices_from_profiles({1: "xy-md02"}))
    try:
        async with running_driver(_source(line, [1])) as run:
            await run.wait_for(lambda: len(run.of("u1")) >= 2)
            await first.close()  # unplug: the tty vanishes
            link.unlink()
            await run.wait_for(lambda: run.errors["connection_lost"] >= 1, timeout=5)
            link.symlink_to(await second.serve_pty())  # replug
            before = len(run.of("u1"))
            await run.wait_for(lambda: len(run.of("u1")) >= before + 2, timeout=8)
    finally:
        await second.close()
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("is unavailable" in m for m in msgs) == 1
    assert sum("is back" in m for m in msgs) == 1


@pytest.mark.slow
async def test_driver_stops_whenever_it_is_cancelled(sim: ModbusSimulator) -> None:
    """pymodbus waits for each answer with asyncio.wait_for, which on Python 3.11 can swallow a
    cancellation that lands as the request times out; the driver then polled on forever and a stop hung
    (6 of 300 cancellations before the fix). Cancel at random moments around the timeouts of a silent unit."""
    import asyncio
    import random

    from gateway.drivers.modbus.config import ModbusSourceConfig
    from gateway.drivers.modbus.driver import ModbusDriver
    from gateway.simulators.modbus.harness import make_context

    sim.fault(2).silent = True
    cfg = ModbusSourceConfig.model_validate(
        _source(await _tcp(sim), [1, 2], interval=0.01, timeout=0.004, retries=0, backoff_max=0.01)
    )
    rng = random.Random(7)
    ignored = 0

    async def emit(readings: Any, *, wait_commit: bool = True) -> None:
        pass

    for _ in range(300):
        driver = ModbusDriver(cfg, make_context("bus"))
        await driver.start()
        task = asyncio.create_task(driver.run(emit))
        await asyncio.sleep(rng.uniform(0.0, 0.04))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if not done:
            ignored += 1
            while not task.done():  # do not leak it into the next round
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
        await driver.close()
    assert sim.stats.per_unit[2] > 100  # the silent unit was being polled when cancelled
    assert ignored == 0
