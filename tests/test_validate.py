"""One reading no store can hold is refused alone and counted; it never fails the shared commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.buffer import AsyncBuffer
from gateway.config import load_config
from gateway.metrics import Metrics
from gateway.model import Reading, now_ns
from gateway.supervisor import SourceSupervisor
from gateway.writer import BufferCommitError, BufferWriter
from tests.test_daemon import seq_source, write_config

YEAR_2300_NS = 10_413_792_000 * 1_000_000_000  # 2300-01-01T00:00:00Z


def reading(value: int, **kw: object) -> Reading:
    base: dict[str, object] = dict(ts_ns=now_ns(), site="test-site", gateway="gw", device="dev",
                                   quantity="sequence", value=value, unit="count")  # fmt: skip
    base.update(kw)
    return Reading(**base)  # type: ignore[arg-type]


@pytest.fixture
async def two_sources(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state", seq_source("lora") + seq_source("steady")))
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite", sync="normal")
    await buffer.set_sinks(["local"])
    metrics = Metrics()
    writer = BufferWriter(buffer, flush_interval_s=0.05, flush_max_readings=1000, metrics=metrics)
    task = asyncio.create_task(writer.run())
    sups = [SourceSupervisor(src, site="test-site", gateway="gw", state_dir=str(tmp_path), writer=writer,
                             metrics=metrics) for src in cfg.sources]  # fmt: skip
    yield sups, buffer, metrics
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await buffer.close()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"ts_ns": YEAR_2300_NS}, "timestamp_out_of_range"),
        ({"ts_ns": -1}, "timestamp_out_of_range"),
        ({"ts_ns": now_ns() + 3 * 86400 * 10**9}, "timestamp_in_future"),
        ({"device": "node\n7"}, "bad_name"),
        ({"device": "bad\ud800"}, "bad_name"),
        ({"quantity": ""}, "bad_name"),
        ({"tags": {"probe": "a\rb"}}, "bad_tag"),
        ({"tags": {"": "x"}}, "bad_tag"),
    ],
)
async def test_a_bad_reading_is_refused_alone_and_the_others_are_committed(
    two_sources: tuple[list[SourceSupervisor], AsyncBuffer, Metrics], bad: dict[str, object], reason: str
) -> None:
    (lora, steady), buffer, metrics = two_sources
    # Both emits land in the same group commit.
    await asyncio.gather(
        lora.emit([reading(1), reading(2, **bad), reading(3)]),
        steady.emit([reading(10, device="other"), reading(11, device="other")]),
    )
    stored = sorted(int(b.reading.value) for b in await buffer.take("local", 100))  # type: ignore[arg-type]
    assert stored == [1, 3, 10, 11]
    sample = metrics.registry.get_sample_value
    assert sample("gateway_readings_refused_total", {"driver": "simulated", "source": "lora", "reason": reason}) == 1
    assert sample("gateway_readings_total", {"driver": "simulated", "device": "dev", "outcome": "ok"}) == 2


async def test_readings_whose_commit_failed_are_not_counted(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "gw.toml", tmp_path / "state", seq_source("a")))
    await (await AsyncBuffer.open(tmp_path / "buffer.sqlite")).close()
    buffer = await AsyncBuffer.open(tmp_path / "buffer.sqlite", read_only=True)  # every commit fails
    metrics = Metrics()
    writer = BufferWriter(buffer, flush_interval_s=0.01, flush_max_readings=1000, metrics=metrics)
    task = asyncio.create_task(writer.run())
    sup = SourceSupervisor(cfg.sources[0], site="test-site", gateway="gw", state_dir=str(tmp_path), writer=writer,
                           metrics=metrics)  # fmt: skip
    try:
        with pytest.raises(BufferCommitError):
            await sup.emit([reading(1), reading(2)])
        assert metrics.registry.get_sample_value(
            "gateway_readings_total", {"driver": "simulated", "device": "dev", "outcome": "ok"}
        ) in (None, 0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await buffer.close()


def test_a_tag_set_accepted_once_is_not_checked_again_but_a_new_bad_one_is() -> None:
    from types import MappingProxyType

    from gateway.model import Reading
    from gateway.validate import BAD_TAG, ReadingValidator

    validator = ReadingValidator()
    now = 1_700_000_000_000_000_000
    good = MappingProxyType({"ch": "c1"})
    bad = MappingProxyType({"ch": "line\nbreak"})

    def reading(tags: object) -> Reading:
        return Reading(now, "s", "g", "d", "temperature", 1.0, "Cel", tags)  # type: ignore[arg-type]

    assert validator.problem(reading(good), "d", now) is None
    assert validator.problem(reading(good), "d", now) is None  # the identity cache answers
    problem = validator.problem(reading(bad), "d", now)
    assert problem is not None and problem[0] == BAD_TAG
    assert validator.problem(reading(bad), "d", now) is not None  # a refused set is never cached


def test_an_empty_unit_accepted_once_does_not_make_an_empty_tag_key_acceptable() -> None:
    from gateway.model import Reading
    from gateway.validate import BAD_TAG, ReadingValidator

    validator = ReadingValidator()
    now = 1_700_000_000_000_000_000
    assert validator.problem(Reading(now, "s", "g", "d", "status", "on", ""), "d", now) is None  # "" is a unit
    problem = validator.problem(Reading(now, "s", "g", "d", "status", "on", "", {"": "x"}), "d", now)
    assert problem is not None and problem[0] == BAD_TAG


async def test_frames_are_refused_and_committed_value_by_value_counted(
    two_sources: tuple[list[SourceSupervisor], AsyncBuffer, Metrics],
) -> None:
    from gateway.frame import Frame, FrameFields

    (lora, steady), buffer, metrics = two_sources
    layout = FrameFields.of(["sequence", "sequence", "sequence"], ["count", "count", "count"])
    good = Frame(now_ns(), "test-site", "gw", "dev", layout, (1, 2, 3))
    bad = Frame(now_ns(), "test-site", "gw", "node\n7", layout, (4, 5, 6))
    await asyncio.gather(lora.emit([good, bad]), steady.emit([reading(10, device="other")]))
    stored = sorted(int(b.reading.value) for b in await buffer.take("local", 100))  # type: ignore[arg-type]
    assert stored == [1, 2, 3, 10]
    sample = metrics.registry.get_sample_value
    assert (
        sample("gateway_readings_refused_total", {"driver": "simulated", "source": "lora", "reason": "bad_name"}) == 3
    )
    assert sample("gateway_readings_total", {"driver": "simulated", "device": "dev", "outcome": "ok"}) == 3
    assert lora.readings_total == 3
