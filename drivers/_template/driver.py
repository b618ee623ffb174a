"""Template driver: copy, rename, fill in. See README.md in this folder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from gateway.driver import PolledDriver, SourceConfig
from gateway.model import Reading


class TemplateConfig(SourceConfig):
    driver: Literal["template"] = "template"
    device: str = Field(min_length=1, description="device name used in the readings")
    value: float = Field(default=21.0, description="the value this example driver reports")


class TemplateDriver(PolledDriver):
    config_model = TemplateConfig

    @classmethod
    def validate(cls, config: SourceConfig) -> None:
        assert isinstance(config, TemplateConfig)
        if config.value < -273.15:
            raise ValueError("value: below absolute zero; use a temperature in Cel")

    async def start(self) -> None:
        """Open the port / connection here."""

    async def poll(self) -> Sequence[Reading]:
        assert isinstance(self.config, TemplateConfig)
        return [self.ctx.reading(self.config.device, "temperature", self.config.value, "Cel")]

    async def close(self) -> None:
        """Close what start() opened."""
