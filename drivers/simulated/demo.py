"""Simulated weather, air-quality and energy devices for ``gateway demo``."""

from __future__ import annotations

from pathlib import Path

from gateway.demo_api import DemoPart


def demo_part(workdir: Path) -> DemoPart:
    return DemoPart(
        title="simulated sensors (no hardware)",
        sources=[
            {
                "driver": "simulated",
                "name": "virtual-street",
                "interval": "2s",
                "devices": [
                    {"name": "park-weather", "kind": "weather"},
                    {"name": "school-air", "kind": "air"},
                ],
            }
        ],
    )
