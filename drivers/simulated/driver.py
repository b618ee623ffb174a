"""The ``simulated`` driver: plausible sensor values with no hardware at all.

Used by ``gateway demo``, by tests and by benchmarks. Kinds:
- ``weather``: temperature, relative_humidity, pressure (slow daily cycle + noise)
- ``air``: pm2_5, pm10 (rush-hour peaks)
- ``energy``: voltage, current, active_power, energy_import (cumulative)
- ``sequence``: one ``sequence`` reading per poll counting 0, 1, 2... with a
  ``run`` tag unique to this start, so tests can check for gaps and duplicates.
``fail_every`` makes every Nth poll raise, to exercise the core's restarts.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.driver import DeviceCatalogue, DriverContext, PolledDriver, SourceConfig
from gateway.model import Reading

Kind = Literal["weather", "air", "energy", "sequence"]
QUANTITIES_OF_KIND: dict[str, frozenset[str]] = {
    "weather": frozenset({"temperature", "relative_humidity", "pressure"}),
    "air": frozenset({"pm2_5", "pm10"}),
    "energy": frozenset({"voltage", "current", "active_power", "energy_import"}),
    "sequence": frozenset({"sequence"}),
}


class SimulatedDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    kind: Kind = "weather"


class SimulatedConfig(SourceConfig):
    driver: Literal["simulated"] = "simulated"
    devices: list[SimulatedDevice] = Field(min_length=1)
    readings_per_poll: int = Field(default=1, ge=1, le=100_000, description="sequence kind: readings per poll")
    fail_every: int = Field(default=0, ge=0, description="raise on every Nth poll (0 = never)")
    seed: int | None = None


class SimulatedFailure(RuntimeError):
    """Raised on purpose (``fail_every``)."""


class SimulatedDriver(PolledDriver):
    config_model = SimulatedConfig

    def __init__(self, config: SourceConfig, ctx: DriverContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, SimulatedConfig)
        self.sim = config
        self.random = random.Random(config.seed)
        self.polls = 0
        self.sequence = 0
        self._next_sequence_ts = 0
        self.run_id = uuid.uuid4().hex[:12]
        self.energy_kwh = {d.name: 1000.0 + self.random.uniform(0, 500) for d in config.devices}

    @classmethod
    def validate(cls, config: SourceConfig) -> None:
        assert isinstance(config, SimulatedConfig)
        names = [d.name for d in config.devices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"devices: duplicate device names {duplicates}")

    @classmethod
    def catalogue(cls, config: SourceConfig) -> DeviceCatalogue:
        assert isinstance(config, SimulatedConfig)
        return DeviceCatalogue({d.name: QUANTITIES_OF_KIND[d.kind] for d in config.devices})

    async def poll(self) -> Sequence[Reading]:
        self.polls += 1
        if self.sim.fail_every and self.polls % self.sim.fail_every == 0:
            raise SimulatedFailure(f"simulated failure on poll {self.polls}")
        now = time.time_ns()
        out: list[Reading] = []
        for device in self.sim.devices:
            out.extend(getattr(self, f"_{device.kind}")(device.name, now))
        return out

    def _noise(self, scale: float) -> float:
        return self.random.gauss(0, scale)

    def _weather(self, device: str, now: int) -> list[Reading]:
        day = math.sin((now / 1e9 % 86400) / 86400 * 2 * math.pi - math.pi / 2)
        r = self.ctx.reading
        return [
            r(device, "temperature", round(14 + 6 * day + self._noise(0.2), 2), "Cel", ts_ns=now),
            r(
                device,
                "relative_humidity",
                round(min(100, max(0, 65 - 15 * day + self._noise(1))), 1),
                "%RH",
                ts_ns=now,
            ),
            r(device, "pressure", round(1013 + self._noise(0.5), 1), "hPa", ts_ns=now),
        ]

    def _air(self, device: str, now: int) -> list[Reading]:
        hour = now / 3.6e12 % 24
        rush = math.exp(-((hour - 8) ** 2) / 2) + math.exp(-((hour - 18) ** 2) / 2)
        pm25 = max(0.0, 8 + 20 * rush + self._noise(1.5))
        r = self.ctx.reading
        return [
            r(device, "pm2_5", round(pm25, 1), "ug/m3", ts_ns=now),
            r(device, "pm10", round(pm25 * 1.6 + abs(self._noise(1)), 1), "ug/m3", ts_ns=now),
        ]

    def _energy(self, device: str, now: int) -> list[Reading]:
        voltage = 230 + self._noise(1.5)
        current = max(0.0, 12 + self._noise(2))
        power = voltage * current * 0.95
        self.energy_kwh[device] += power * self.sim.interval / 3.6e6
        r = self.ctx.reading
        return [
            r(device, "voltage", round(voltage, 1), "V", ts_ns=now),
            r(device, "current", round(current, 2), "A", ts_ns=now),
            r(device, "active_power", round(power, 1), "W", ts_ns=now),
            r(device, "energy_import", round(self.energy_kwh[device], 3), "kWh", ts_ns=now),
        ]

    def _sequence(self, device: str, now: int) -> list[Reading]:
        out = []
        tags = {"run": self.run_id}
        # Distinct, increasing millisecond timestamps within a run, also across polls
        # that come less than readings_per_poll ms apart (a late tick followed by an
        # on-time one): VictoriaMetrics keeps ms precision and deduplicates samples
        # of a series that share a millisecond.
        ts = max(now, self._next_sequence_ts)
        for i in range(self.sim.readings_per_poll):
            ts_i = ts + i * 1_000_000
            out.append(self.ctx.reading(device, "sequence", self.sequence, "count", ts_ns=ts_i, tags=tags))
            self.sequence += 1
        self._next_sequence_ts = ts + self.sim.readings_per_poll * 1_000_000
        return out

    def status(self) -> dict[str, object]:
        return {"polls": self.polls}
