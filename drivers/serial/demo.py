"""Serial sensors for ``gateway demo``: an SDS011, a PMS5003 and a GPS on pty pairs.

The particulate sensors take their position from the GPS (``position_from``:
``latitude``/``longitude`` readings of each sensor), as on a mobile air-quality unit.
The simulators run in the demo's own loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.demo_api import DemoPart
from gateway.simulators.serial.pty import Faults, PtySimulator


def demo_part(workdir: Path) -> DemoPart | None:
    workdir.mkdir(parents=True, exist_ok=True)
    sims = [
        PtySimulator(device="sds011", link=workdir / "ttySDS011", faults=Faults(noise=0.05, bad_checksum=0.02)),
        PtySimulator(device="pms5003", link=workdir / "ttyPMS5003", rate_hz=0.5),
        PtySimulator(device="nmea", link=workdir / "ttyGPS"),
    ]

    async def start() -> None:
        for sim in sims:
            await sim.start()

    async def stop() -> None:
        for sim in sims:
            await sim.stop()

    sources: list[dict[str, Any]] = [
        {"driver": "serial", "name": "demo-gps", "port": str(workdir / "ttyGPS"), "profile": "nmea-gps"},
        {
            "driver": "serial",
            "name": "demo-sds011",
            "port": str(workdir / "ttySDS011"),
            "profile": "sds011",
            "position_from": "demo-gps",
        },
        {
            "driver": "serial",
            "name": "demo-pms5003",
            "port": str(workdir / "ttyPMS5003"),
            "profile": "pms5003",
            "decoder": {"particle_counts": True},
            "position_from": "demo-gps",
        },
    ]
    notes = [f"pty links in {workdir}: ttySDS011 (5% noise, 2% bad checksums), ttyPMS5003, ttyGPS"]
    return DemoPart(
        title="serial: SDS011 + PMS5003 + NMEA GPS (pty simulators)",
        sources=sources,
        start=start,
        stop=stop,
        notes=notes,
    )
