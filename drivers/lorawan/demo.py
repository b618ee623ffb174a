"""LoRa part of ``gateway demo``: a P2P modem emulator, and (where Mosquitto is
installed) a private broker with ChirpStack and The Things Stack stand-ins."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from gateway.simulators.loramodem.cli import play
from gateway.simulators.loramodem.emulator import RAK3172Emulator
from gateway.simulators.lorawan.ns import NetworkServerSim, Server, SimDevice, make_devices

from gateway.demo_api import DemoPart

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).is_file()), None)


async def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


def demo_part(workdir: Path) -> DemoPart | None:
    workdir.mkdir(parents=True, exist_ok=True)
    modem = RAK3172Emulator()
    sources: list[dict[str, Any]] = [
        {
            "driver": "loramodem",
            "name": "lora-p2p",
            "modem": "rak3172",
            "port": modem.path,
            "codec": "cayenne_lpp",
            "device": "p2p-node",
            "codec_options": {"channels": {"3": "battery_voltage"}},
        },
    ]
    notes = [f"RAK3172 P2P modem emulator on {modem.path}"]
    tasks: list[asyncio.Task[Any]] = []
    broker: list[subprocess.Popen[bytes]] = []
    binary = _mosquitto_binary()
    port = _free_port()
    if binary is None:
        notes.append("mosquitto is not installed: the LoRaWAN network-server part is skipped")
    else:
        lht65 = make_devices(2, "dragino_lht65")
        elsys = make_devices(2, "elsys", first=10)
        sources += [
            {
                "driver": "lorawan",
                "name": "lorawan-chirpstack",
                "server": "chirpstack",
                "port": port,
                "client_id": "demo-chirpstack",
                "devices": [{"id": d.dev_eui, "name": d.device_id, "profile": "lorawan-dragino-lht65"} for d in lht65],
            },
            {
                "driver": "lorawan",
                "name": "lorawan-ttn",
                "server": "ttn",
                "port": port,
                "client_id": "demo-ttn",
                "fport_codecs": {5: "elsys"},
            },
        ]
        notes.append(f"ChirpStack and TTS stand-ins publishing to a private mosquitto on 127.0.0.1:{port}")

    async def start() -> None:
        modem.start()
        tasks.append(asyncio.create_task(play(modem, codec="cayenne_lpp", rate=0.2, count=0, rssi=-74, snr=9)))
        if binary is None:
            return
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {workdir}/\n"
        )
        log_file = (workdir / "mosquitto.log").open("ab")
        broker.append(subprocess.Popen([binary, "-c", str(conf)], stdout=log_file, stderr=subprocess.STDOUT))
        await _wait_for_port(port)
        plan: list[tuple[Server, list[SimDevice], float]] = [("chirpstack", lht65, 0.5), ("ttn", elsys, 0.3)]
        for server, devices, rate in plan:
            sim = NetworkServerSim(
                host="127.0.0.1",
                port=port,
                server=server,
                devices=devices,
                rate=rate,
                duplicate_every=7,
                malformed_every=25,
            )
            tasks.append(asyncio.create_task(sim.run(), name=f"demo-{server}-sim"))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        modem.close()
        for proc in broker:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 5)

    return DemoPart(
        title="LoRa (LoRaWAN network servers and a P2P modem)", sources=sources, start=start, stop=stop, notes=notes
    )
