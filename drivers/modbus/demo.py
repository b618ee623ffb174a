"""Modbus part of ``gateway demo``: an RS-485 line on a pty and a Modbus TCP meter, simulated."""

from __future__ import annotations

import socket
from pathlib import Path

from gateway.demo_api import DemoPart
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.server import ModbusSimulator


def demo_part(workdir: Path) -> DemoPart | None:
    line = ModbusSimulator(devices_from_profiles({1: "eastron-sdm630", 7: "xy-md02"}))
    tcp = ModbusSimulator(devices_from_profiles({1: "eastron-sdm120"}))
    link = workdir / "ttyMODBUS"  # a stable name, like /dev/serial/by-id/..., pointing at the pty
    port = _free_port()
    part = DemoPart(
        title="Modbus: an SDM630 meter and an XY-MD02 sensor on a simulated RS-485 line, an SDM120 over TCP",
        sources=[
            {
                "driver": "modbus",
                "name": "demo-rs485",
                "transport": "rtu",
                "port": str(link),
                "interval": "5s",
                "timeout": "500ms",
                "devices": [
                    {"name": "meter-hall", "unit_id": 1, "profile": "eastron-sdm630"},
                    {"name": "climate-cabinet", "unit_id": 7, "profile": "xy-md02"},
                ],
            },
            {
                "driver": "modbus",
                "name": "demo-modbus-tcp",
                "transport": "tcp",
                "host": "127.0.0.1",
                "port": port,
                "interval": "5s",
                "devices": [{"name": "meter-streetlights", "unit_id": 1, "profile": "eastron-sdm120"}],
            },
        ],
        notes=[f"Modbus RTU line at {link}; Modbus TCP meter at 127.0.0.1:{port}"],
    )

    async def start() -> None:
        pty = await line.serve_pty()
        link.unlink(missing_ok=True)
        link.symlink_to(pty)
        await tcp.serve_tcp("127.0.0.1", port)

    async def stop() -> None:
        await line.close()
        await tcp.close()
        link.unlink(missing_ok=True)

    part.start, part.stop = start, stop
    return part


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
