"""Shared pytest fixtures: real Mosquitto and VictoriaMetrics on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Mosquitto, VictoriaMetrics, running


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with running(Mosquitto(tmp_path / "mosquitto")) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with running(VictoriaMetrics(tmp_path / "victoria")) as server:
        yield server  # type: ignore[misc]
