"""The modem driver against the RN2483 and RAK3172 emulators on a pty pair."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from gateway.buffer import RejectedMessage
from gateway.driver import DriverContext
from gateway.drivers.loramodem.config import LoRaModemConfig
from gateway.drivers.loramodem.driver import LoRaModemDriver
from gateway.frame import Frame, as_readings
from gateway.model import Reading
from gateway.simulators.loramodem.emulator import EMULATORS, ModemEmulator, RAK3172Emulator, RN2483Emulator
from gateway.simulators.lorawan.payloads import cayenne, dragino_lht65, expected_values


class Run:
    def __init__(self, emulator: ModemEmulator, **config: Any) -> None:
        self.emulator = emulator
        self.errors: Counter[str] = Counter()
        self.up: list[bool] = []
        self.readings: list[Reading] = []
        self.rejected: list[RejectedMessage] = []
        cfg = LoRaModemConfig.model_validate(
            {"driver": "loramodem", "name": "p2p", "port": emulator.path, "response_timeout": "300ms", **config}
        )
        LoRaModemDriver.validate(cfg)
        ctx = DriverContext(
            site="s",
            gateway="g",
            source="p2p",
            driver="loramodem",
            logger=logging.getLogger("t.loramodem"),
            count_error_hook=lambda d, s, kind: self.errors.update([kind]),
            device_up_hook=lambda d, s, dev, up: self.up.append(up),
            reject_hook=self.keep,
        )
        self.driver = LoRaModemDriver(cfg, ctx)

    async def keep(self, items: Sequence[RejectedMessage]) -> None:
        self.rejected.extend(items)

    async def emit(self, readings: Sequence[Reading | Frame], *, wait_commit: bool = True) -> None:
        self.readings.extend(as_readings(readings))

    def of(self, quantity: str) -> list[Reading]:
        return [r for r in self.readings if r.quantity == quantity]


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[ModemEmulator, asyncio.Task[None]]] = []

    async def start(model: str, **config: Any) -> Run:
        emulator = EMULATORS[model]()
        emulator.start()
        run = Run(emulator, modem=model, **config)
        task = asyncio.create_task(run.driver.run(run.emit))
        started.append((emulator, task))
        return run

    yield start
    for emulator, task in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        emulator.close()


async def test_rn2483_packets_snr_and_rearm(running: Callable[..., Any]) -> None:
    run: Run = await running("rn2483", codec="cayenne_lpp", codec_options={"channels": {"3": "battery_voltage"}})
    emu = run.emulator
    assert isinstance(emu, RN2483Emulator)
    await wait_for(lambda: emu.armed)
    assert emu.stats.commands[:2] == ["sys get ver", "mac pause"]
    assert "radio set wdt 0" in emu.stats.commands and "radio set sf sf7" in emu.stats.commands
    for seq in range(3):
        await wait_for(lambda: emu.armed)  # the driver re-arms after each packet
        assert emu.inject(cayenne(seq), snr=5 - seq)
    await wait_for(lambda: len(run.of("snr")) == 3)
    assert [r.value for r in run.of("temperature")] == [expected_values(n)["temperature"] for n in range(3)]
    assert [r.value for r in run.of("snr")] == [5, 4, 3]
    assert run.of("rssi") == []  # the RN2483 does not report it
    assert {r.device for r in run.readings} == {"p2p"}
    assert emu.stats.commands.count("radio rx 0") == 4
    assert run.up == [True]


async def test_rn2483_garbage_and_radio_err_are_counted(running: Callable[..., Any]) -> None:
    run: Run = await running("rn2483", codec="cayenne_lpp")
    emu = run.emulator
    assert isinstance(emu, RN2483Emulator)
    await wait_for(lambda: emu.armed)
    emu.armed = False
    emu.write_line("radio_rx  0167ZZ")  # not hex
    await wait_for(lambda: emu.armed)
    emu.inject_error()
    await wait_for(lambda: emu.armed)
    emu.inject(bytes.fromhex("0167FFD7" + "05FE"))  # -4.1 degC then an unknown LPP type
    await wait_for(lambda: len(run.of("temperature")) == 1)
    assert run.of("temperature")[0].value == -4.1
    assert run.errors == {"bad_hex": 1, "radio_err": 1, "unknown_type": 1}
    assert [m.raw for m in run.rejected] == [b"radio_rx  0167ZZ"]  # kept; a radio_err is only counted


async def test_rak3172_rui3_events_and_node_addresses(running: Callable[..., Any]) -> None:
    run: Run = await running("rak3172", profile="lorawan-dragino-lht65", address_bytes=1, frequency=868300000)
    emu = run.emulator
    assert isinstance(emu, RAK3172Emulator)
    await wait_for(lambda: emu.receiving)
    assert emu.mode == 0 and emu.p2p == ["868300000", "7", "125", "0", "8", "14"]
    emu.inject(b"\x07" + dragino_lht65(0), rssi=-71, snr=8)
    emu.inject(b"\x09" + dragino_lht65(5), rssi=-103, snr=-4)
    await wait_for(lambda: len(run.of("rssi")) == 2)
    temps = {r.device: r.value for r in run.of("temperature")}
    assert temps == {"p2p-07": expected_values(0)["temperature"], "p2p-09": expected_values(5)["temperature"]}
    assert [(r.device, r.value) for r in run.of("rssi")] == [("p2p-07", -71), ("p2p-09", -103)]
    assert [r.unit for r in run.of("snr")] == ["dB", "dB"]


async def test_rak3172_old_two_line_format_and_bad_events(running: Callable[..., Any]) -> None:
    run: Run = await running("rak3172", codec="cayenne_lpp")
    emu = run.emulator
    await wait_for(lambda: isinstance(emu, RAK3172Emulator) and emu.receiving)
    emu.write_line("+EVT:RXP2P, RSSI -60, SNR 11")
    emu.write_line("+EVT:" + cayenne(1).hex().upper())
    emu.write_line("+EVT:RXP2P:-60:11:XYZ")
    emu.write_line("+EVT:RXP2P:-50:9:" + "03670110")
    await wait_for(lambda: len(run.of("rssi")) == 2)
    assert [r.value for r in run.of("rssi")] == [-60, -50]
    assert [r.value for r in run.of("temperature")] == [expected_values(1)["temperature"], 27.2]
    assert run.errors == {"bad_event": 1}
    assert [(m.raw, m.reason) for m in run.rejected] == [(b"+EVT:RXP2P:-60:11:XYZ", "bad_event")]


async def test_rak3172_noisy_lines_are_counted_not_fatal(running: Callable[..., Any]) -> None:
    # issue 8: an RSSI of 5000 digits made int() raise ValueError, and a line over the
    # reader's 64 KiB limit made readline() raise it; either one restarted the driver.
    run: Run = await running("rak3172", codec="cayenne_lpp")
    emu = run.emulator
    await wait_for(lambda: isinstance(emu, RAK3172Emulator) and emu.receiving)
    emu.write_line("+EVT:RXP2P:" + "9" * 5000 + ":11:0167")
    assert isinstance(emu, RAK3172Emulator)
    async with asyncio.timeout(5):  # the old driver died and never drained the pty
        await emu.write_long_line("+EVT:" + "A" * 70_000)
    emu.write_line("+EVT:RXP2P:-50:9:" + "03670110")
    await wait_for(lambda: len(run.of("rssi")) == 1)
    assert [r.value for r in run.of("temperature")] == [27.2]
    assert run.errors["bad_event"] == 1 and run.errors["line_too_long"] >= 1
    assert set(run.errors) <= {"bad_event", "line_too_long", "unexpected_line"}  # the long line's tail, if split
    assert run.up == [True]  # never went down: the session was not restarted


async def test_wrong_modem_type_goes_down_once_and_keeps_retrying(running: Callable[..., Any]) -> None:
    emulator = RN2483Emulator()
    emulator.start()
    run = Run(emulator, modem="rak3172", codec="elsys")  # a RAK config on an RN2483
    task = asyncio.create_task(run.driver.run(run.emit))
    try:
        # The emulator counts a command when it arrives, the driver its refusal a moment later.
        await wait_for(lambda: emulator.stats.commands.count("AT") >= 2 and run.errors["command_refused"] >= 2,
                       timeout=10)  # fmt: skip
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        emulator.close()
    assert run.up == [False] and run.errors["command_refused"] >= 2


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="codec: unknown codec 'nope'"):
        LoRaModemDriver.validate(
            LoRaModemConfig.model_validate(
                {"driver": "loramodem", "name": "x", "modem": "rn2483", "port": "/dev/x", "codec": "nope"}
            )
        )
    with pytest.raises(ValueError, match="profile: no profile named"):
        LoRaModemDriver.validate(
            LoRaModemConfig.model_validate(
                {"driver": "loramodem", "name": "x", "modem": "rn2483", "port": "/dev/x", "profile": "lorawan-nope"}
            )
        )
