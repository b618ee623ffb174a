"""The simulators' command lines and the LoRa demo part."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from gateway.drivers.lorawan.demo import demo_part
from gateway.simulators.loramodem.cli import play
from gateway.simulators.loramodem.emulator import RN2483Emulator
from lora_helpers import Harness, wait_for

from gateway.config import build_config
from tests.servers import Mosquitto


async def test_sim_lorawan_cli_publishes_to_the_broker(mosquitto: Mosquitto) -> None:
    h = Harness(server="ttn", host=mosquitto.host, port=mosquitto.port, default_codec="elsys", radio="off")
    await h.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "sim",
        "lorawan",
        "--server",
        "ttn",
        "--port",
        str(mosquitto.port),
        "--codec",
        "elsys",
        "--devices",
        "2",
        "--count",
        "6",
        "--rate",
        "0",
        "--duplicate-every",
        "2",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    try:
        await wait_for(lambda: len(h.of("temperature")) >= 6)
    finally:
        await h.stop()
    assert proc.returncode == 0 and b"published 6 uplinks, 3 duplicates" in out
    assert {r.device for r in h.readings} == {"sim-elsys-1", "sim-elsys-2"}
    assert h.errors["duplicate"] == 3


def test_sim_lorawan_cli_reports_a_dead_broker() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "sim", "lorawan", "--port", "1", "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "cannot reach the MQTT broker" in proc.stdout


async def test_modem_sim_play_counts_missed_packets_when_not_armed() -> None:
    emulator = RN2483Emulator()
    emulator.start()
    try:
        delivered = await play(emulator, codec="cayenne_lpp", rate=200, count=3, rssi=-70, snr=5)
    finally:
        emulator.close()
    assert delivered == 0 and emulator.stats.missed == 3  # nobody sent `radio rx 0`


async def test_demo_part_sources_validate_and_start_stop(tmp_path: Path) -> None:
    part = demo_part(tmp_path)
    assert part is not None and part.start is not None and part.stop is not None
    names = {s["name"] for s in part.sources}
    assert names == {"lora-p2p", "lorawan-chirpstack", "lorawan-ttn"}  # mosquitto is installed here
    config = build_config({"gateway": {"state_dir": str(tmp_path)}, "sources": part.sources})
    assert {s.config.driver for s in config.sources} == {"loramodem", "lorawan"}
    await part.start()
    await part.stop()
    assert (tmp_path / "mosquitto.conf").is_file()
