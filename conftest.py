"""Shared pytest fixtures: real Mosquitto and VictoriaMetrics on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import scheduling
from tests.servers import Mosquitto, VictoriaMetrics, running


@pytest.fixture(autouse=True)
def poll_phase_of_the_process() -> Iterator[None]:
    """The poll phase is per process (one gateway a process); a daemon run by one test must not move the
    ticks of the next (a daemon sets it from its identity at start and restores it at stop)."""
    before = scheduling.phase()
    yield
    scheduling.set_phase(before)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with running(Mosquitto(tmp_path / "mosquitto")) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with running(VictoriaMetrics(tmp_path / "victoria")) as server:
        yield server  # type: ignore[misc]
