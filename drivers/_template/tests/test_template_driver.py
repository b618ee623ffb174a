"""The template's own test: shows how to test a driver without the daemon."""

from __future__ import annotations

import logging

import pytest
from gateway.drivers._template.driver import TemplateConfig, TemplateDriver

from gateway.driver import DriverContext


def make_ctx() -> DriverContext:
    return DriverContext(site="s", gateway="g", source="example", driver="template", logger=logging.getLogger("t"))


async def test_poll_returns_one_canonical_reading() -> None:
    config = TemplateConfig(driver="template", name="example", device="lab", value=19.5)
    driver = TemplateDriver(config, make_ctx())
    await driver.start()
    readings = await driver.poll()
    await driver.close()
    assert [(r.device, r.quantity, r.value, r.unit, r.site) for r in readings] == [
        ("lab", "temperature", 19.5, "Cel", "s")
    ]


def test_validate_rejects_impossible_value() -> None:
    config = TemplateConfig(driver="template", name="example", device="lab", value=-300)
    with pytest.raises(ValueError, match="absolute zero"):
        TemplateDriver.validate(config)
