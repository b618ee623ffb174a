"""What a driver family contributes to ``gateway demo`` (entry point group ``gateway.demos``).

A factory ``demo_part(workdir: Path) -> DemoPart | None`` returns the sources to
add to the demo config and how to start/stop the simulators behind them (in the
demo's own asyncio loop). Return None when the part cannot run here (e.g. no
MQTT broker installed), after logging why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class DemoPart:
    title: str
    sources: list[dict[str, Any]]
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None
    notes: list[str] = field(default_factory=list)


DemoFactory = Callable[[Path], DemoPart | None]
