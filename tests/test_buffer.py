"""Unit behaviour of the durable buffer (gateway.buffer)."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import sqlite3
from pathlib import Path

import pytest

from gateway.buffer import (
    AppendResult,
    AsyncBuffer,
    BufferCorruptError,
    BufferedReading,
    BufferLockedError,
    DurableBuffer,
    DurableBufferError,
    UnknownSinkError,
    logical_size,
)
from gateway.model import Quality, Reading


def reading(i: int, value: float | int | bool | str | None = None, **changes: object) -> Reading:
    r = Reading(
        ts_ns=1_700_000_000_000_000_000 + i,
        site="site-a",
        gateway="gw-1",
        device="meter-7",
        quantity="sequence",
        value=i if value is None else value,
        unit="count",
    )
    return r.with_changes(**changes) if changes else r


def values(items: list[BufferedReading]) -> list[float | int | bool | str]:
    return [item.reading.value for item in items]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "buffer" / "readings.db"


def test_every_value_type_tags_and_quality_round_trip_exactly(path: Path) -> None:
    odd: list[float | int | bool | str] = [
        1.5,
        -0.0,
        float("inf"),
        float("-inf"),
        float("nan"),
        0,
        -(2**63),
        2**63 - 1,
        2**64 + 7,  # beyond SQLite's INTEGER
        -(2**80),
        True,
        False,
        "",
        "text with \x00 NUL",
        "ünïcödé ✓",
        "lone surrogate \udc80",  # not valid UTF-8
        1.0,  # a float that looks like an int stays a float
    ]
    tags_cycle = [{}, {"room": "B.12", "floor": "2"}, {"ümlaut": "\udc81 bad"}]
    quality_cycle = [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD]
    batch = [
        reading(i, v, tags=tags_cycle[i % 3], quality=quality_cycle[i % 3], device=f"dev-{i % 2}\udcff")
        for i, v in enumerate(odd)
    ]
    with DurableBuffer(path) as buf:
        assert buf.append(batch) == AppendResult(len(batch), 0, 0)
        buf.set_sinks(["influx"])
    with DurableBuffer(path) as buf:  # from disk, not from a cache
        got = [item.reading for item in buf.take("influx", 100)]
    assert len(got) == len(batch)
    for want, have in zip(batch, got, strict=True):
        assert type(have.value) is type(want.value)
        if isinstance(want.value, float) and math.isnan(want.value):
            assert math.isnan(have.value)  # type: ignore[arg-type]
        else:
            assert have.value == want.value
            if isinstance(want.value, float):
                assert math.copysign(1, want.value) == math.copysign(1, have.value)  # type: ignore[arg-type]
        assert dict(have.tags) == dict(want.tags)
        assert have.quality is want.quality
        assert (have.ts_ns, have.site, have.gateway, have.device, have.quantity, have.unit) == (
            want.ts_ns,
            want.site,
            want.gateway,
            want.device,
            want.quantity,
            want.unit,
        )


def test_unsupported_value_type_is_a_clear_error_and_stores_nothing(path: Path) -> None:
    with DurableBuffer(path) as buf:
        with pytest.raises(TypeError, match="float, int, bool or str"):
            buf.append([reading(0), reading(1, value=[1, 2])])  # type: ignore[arg-type]
        assert buf.stats().readings == 0
        assert buf.append([reading(2)]).accepted == 1
        buf.set_sinks(["a"])
        assert [b.id for b in buf.take("a", 10)] == [1]  # the failed batch used no ids


def test_each_sink_has_its_own_cursor_and_rows_go_only_when_all_acked(path: Path) -> None:
    with DurableBuffer(path) as buf:
        buf.set_sinks(["influx", "mqtt"])
        buf.append([reading(i) for i in range(10)])
        first = buf.take("influx", 4)
        assert values(first) == [0, 1, 2, 3]
        buf.ack("influx", first[-1].id)
        assert values(buf.take("influx", 100)) == list(range(4, 10))
        assert values(buf.take("mqtt", 3)) == [0, 1, 2]  # mqtt is untouched
        assert buf.stats().readings == 10  # nothing deleted: mqtt has acked nothing
        buf.ack("mqtt", 2)
        stats = buf.stats()
        assert stats.readings == 8  # ids 1, 2 acked by both
        assert stats.sinks["mqtt"].pending == 8
        assert stats.sinks["influx"].pending == 6
        assert stats.sinks["influx"].oldest_pending_ts_ns == reading(4).ts_ns
        buf.ack("influx", 1)  # backwards: ignored
        assert buf.stats().sinks["influx"].acked_id == 4
        buf.ack("influx", 10**9)  # beyond the last id: clamped, future readings stay unacked
        buf.append([reading(10)])
        assert values(buf.take("influx", 10)) == [10]


def test_take_after_id_pipelines_without_acking(path: Path) -> None:
    with DurableBuffer(path) as buf:
        buf.set_sinks(["a"])
        buf.append([reading(i) for i in range(6)])
        batch1 = buf.take("a", 2)
        batch2 = buf.take("a", 2, after_id=batch1[-1].id)
        assert values(batch2) == [2, 3]
        assert values(buf.take("a", 2, after_id=0)) == [0, 1]  # never before the cursor...
        buf.ack("a", batch1[-1].id)
        assert values(buf.take("a", 2, after_id=0)) == [2, 3]  # ...which has moved


def test_a_dead_sink_does_not_hold_back_the_others(path: Path) -> None:
    with DurableBuffer(path, max_bytes=200 * logical_size(reading(0))) as buf:
        buf.set_sinks(["live", "dead"])
        for batch in range(10):
            buf.append([reading(batch * 50 + i) for i in range(50)])
            items = buf.take("live", 1000)
            assert values(items) == list(range(batch * 50, batch * 50 + 50))  # no gap for the live sink
            buf.ack("live", items[-1].id)
        stats = buf.stats()
        # the dead sink keeps its cursor and finds the newest 200 readings (drop_oldest)
        assert stats.sinks["dead"].acked_id == 0
        assert stats.sinks["dead"].pending == 200
        assert stats.sinks["live"].pending == 0
        assert values(buf.take("dead", 1000)) == list(range(300, 500))
        assert stats.dropped_oldest_total == 300


def test_unknown_sink_is_a_typed_error(path: Path) -> None:
    with DurableBuffer(path) as buf:
        buf.set_sinks(["a"])
        with pytest.raises(UnknownSinkError, match="unknown sink 'b'"):
            buf.take("b", 1)
        with pytest.raises(KeyError):
            buf.ack("b", 1)


def test_drop_oldest_counts_exactly_and_the_count_survives_reopen(path: Path) -> None:
    size = logical_size(reading(0))
    assert all(logical_size(reading(i)) == size for i in range(100))
    with DurableBuffer(path, max_bytes=10 * size) as buf:
        buf.set_sinks(["a"])
        assert buf.append([reading(i) for i in range(8)]) == AppendResult(8, 0, 0)
        assert buf.append([reading(i) for i in range(8, 12)]) == AppendResult(4, 0, 2)
        # a batch bigger than the whole buffer keeps only its newest readings
        assert buf.append([reading(i) for i in range(12, 27)]) == AppendResult(10, 0, 15)
        assert values(buf.take("a", 100)) == list(range(17, 27))
        assert buf.stats().bytes == 10 * size
    with DurableBuffer(path, max_bytes=10 * size) as buf:
        stats = buf.stats()
        assert (stats.dropped_oldest_total, stats.dropped_newest_total) == (17, 0)
        assert stats.readings == 10 and stats.bytes == 10 * size  # recomputed on open


def test_drop_newest_counts_exactly_and_the_count_survives_reopen(path: Path) -> None:
    size = logical_size(reading(0))
    with DurableBuffer(path, max_bytes=10 * size, overflow="drop_newest") as buf:
        buf.set_sinks(["a"])
        assert buf.append([reading(i) for i in range(8)]) == AppendResult(8, 0, 0)
        assert buf.append([reading(i) for i in range(8, 12)]) == AppendResult(2, 2, 0)
        assert buf.append([reading(12)]) == AppendResult(0, 1, 0)
        buf.ack("a", 5)
        assert buf.append([reading(i) for i in range(13, 20)]) == AppendResult(5, 2, 0)
        assert values(buf.take("a", 100)) == [5, 6, 7, 8, 9, 13, 14, 15, 16, 17]
    with DurableBuffer(path, max_bytes=10 * size, overflow="drop_newest") as buf:
        assert buf.stats().dropped_newest_total == 5
        assert buf.stats().dropped_oldest_total == 0


def test_overflow_logs_once_on_transition(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    size = logical_size(reading(0))
    with caplog.at_level(logging.WARNING, logger="gateway.buffer"), DurableBuffer(path, max_bytes=10 * size) as buf:
        buf.set_sinks(["a"])
        for i in range(30):
            buf.append([reading(i)])
        assert sum("is full" in r.message for r in caplog.records) == 1
        buf.ack("a", 10**6)
        assert sum("below its size limit" in r.message for r in caplog.records) == 1


def test_dead_letters_are_kept_counted_and_bounded(path: Path) -> None:
    with DurableBuffer(path, max_dead_letters=5) as buf:
        buf.set_sinks(["influx", "mqtt"])
        buf.append([reading(i, tags={"k": "v"}) for i in range(8)])
        items = buf.take("influx", 8)
        buf.dead_letter("influx", items[:3], "400: field type conflict")
        buf.ack("influx", items[-1].id)
        letters = buf.dead_letters("influx")
        assert [d.id for d in letters] == [3, 2, 1]  # newest first
        assert letters[0].reason == "400: field type conflict"
        assert letters[0].reading == items[2].reading
        assert letters[0].dead_at_ns > 0
        buf.dead_letter("mqtt", buf.take("mqtt", 4), "too large")
        stats = buf.stats()
        assert stats.dead_letters_total == 7
        assert stats.sinks["influx"].dead_letters == 1  # the table keeps the newest 5 of all sinks
        assert stats.sinks["mqtt"].dead_letters == 4
        assert len(buf.dead_letters()) == 5
        assert buf.dead_letters("mqtt", limit=2)[0].id == 4
    with DurableBuffer(path) as buf:
        assert buf.stats().dead_letters_total == 7
        assert len(buf.dead_letters()) == 5


def test_set_sinks_new_sink_gets_backlog_removed_sink_gets_nothing(path: Path) -> None:
    with DurableBuffer(path) as buf:
        buf.append([reading(i) for i in range(5)])  # before any sink: kept for the first one
        assert buf.set_sinks(["a"]) == []
        assert values(buf.take("a", 10)) == [0, 1, 2, 3, 4]
        buf.ack("a", 3)
        assert buf.set_sinks(["a", "b"]) == []
        assert values(buf.take("b", 10)) == [3, 4]  # the backlog still buffered
        assert buf.set_sinks(["b"]) == ["a"]
        with pytest.raises(UnknownSinkError):
            buf.take("a", 10)
        buf.ack("b", 5)
        assert buf.stats().readings == 0  # a's cursor no longer holds anything back
        buf.append([reading(5)])
        assert buf.set_sinks(["b", "c"]) == []
        assert values(buf.take("c", 10)) == [5]
    with DurableBuffer(path) as buf:
        assert sorted(buf.stats().sinks) == ["b", "c"]


def test_removing_the_slow_sink_deletes_what_the_others_acked(path: Path) -> None:
    with DurableBuffer(path) as buf:
        buf.set_sinks(["fast", "slow"])
        buf.append([reading(i) for i in range(5)])
        buf.ack("fast", 5)
        assert buf.stats().readings == 5
        assert buf.set_sinks(["fast"]) == ["slow"]
        assert buf.stats().readings == 0


def test_reopen_keeps_order_cursors_and_ids_are_never_reused(path: Path) -> None:
    with DurableBuffer(path) as buf:
        buf.set_sinks(["a", "b"])
        buf.append([reading(i) for i in range(6)])
        buf.ack("a", 6)
        buf.ack("b", 2)
    with DurableBuffer(path) as buf:
        assert values(buf.take("b", 10)) == [2, 3, 4, 5]
        assert buf.take("a", 10) == []
        buf.ack("b", 6)
        assert buf.stats().readings == 0
    with DurableBuffer(path) as buf:
        buf.append([reading(6)])
        assert [item.id for item in buf.take("a", 10)] == [7]


def test_a_second_opener_is_refused(path: Path) -> None:
    with DurableBuffer(path), pytest.raises(BufferLockedError, match="in use"):
        DurableBuffer(path)
    DurableBuffer(path).close()  # free again after close


def test_read_only_inspection_while_the_owner_writes(path: Path) -> None:
    with DurableBuffer(path) as owner:
        owner.set_sinks(["a"])
        owner.append([reading(i) for i in range(5)])
        owner.dead_letter("a", owner.take("a", 1), "bad")
        with DurableBuffer(path, read_only=True) as viewer:  # no lock conflict
            stats = viewer.stats()
            assert (stats.readings, stats.sinks["a"].pending, stats.dead_letters_total) == (5, 5, 1)
            assert viewer.dead_letters("a")[0].reason == "bad"
            with pytest.raises(DurableBufferError, match="read-only"):
                viewer.append([reading(9)])
            owner.append([reading(5)])  # the owner is not blocked by the reader
            assert viewer.stats().readings == 6  # sees the owner's commits
            assert len(viewer.take("a", 100)) == 6
    with pytest.raises(BufferCorruptError):
        DurableBuffer(path.with_name("missing.db"), read_only=True)


def test_a_file_that_is_not_a_database_is_a_clear_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(BufferCorruptError, match="move the file aside"):
        DurableBuffer(path)
    path.unlink()
    DurableBuffer(path).close()  # the failed open released the lock


def _limit_pages(buf: DurableBuffer, extra: int) -> None:
    # SQLITE_FULL on demand: the database may not grow past this many pages.
    conn: sqlite3.Connection = buf._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages + extra}")


def test_full_disk_with_drop_oldest_keeps_newest_and_counts_exactly(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batch = 500
    with caplog.at_level(logging.WARNING, logger="gateway.buffer"), DurableBuffer(path) as buf:
        buf.set_sinks(["dead"])
        reserve = Path(f"{path}.reserve")
        assert reserve.stat().st_blocks * 512 >= 8 * 1024**2  # ballast, really allocated
        buf.append([reading(i) for i in range(batch)])
        _limit_pages(buf, 20)
        appended = batch
        for _ in range(40):
            result = buf.append([reading(appended + i) for i in range(batch)])
            assert result.accepted + result.dropped_newest == batch
            appended += batch
        stats = buf.stats()
        assert stats.disk_full_events >= 1
        assert stats.dropped_newest_total == 0  # room was made by dropping the oldest, as the policy says
        assert not reserve.exists()  # given back to the filesystem
        assert sum("disk full" in r.message for r in caplog.records) == 1  # logged once, not per batch
        assert stats.readings + stats.dropped_oldest_total + stats.dropped_newest_total == appended
        got = values(buf.take("dead", appended))
        assert got == list(range(appended - len(got), appended))  # the newest, in order, no gap
        assert len(got) > batch
    with DurableBuffer(path) as buf:  # counts persisted
        again = buf.stats()
        assert again.dropped_oldest_total + again.dropped_newest_total == appended - again.readings


def test_full_disk_with_drop_newest_keeps_oldest_and_counts_exactly(path: Path) -> None:
    batch = 500
    with DurableBuffer(path, overflow="drop_newest") as buf:
        buf.set_sinks(["dead"])
        buf.append([reading(i) for i in range(batch)])
        _limit_pages(buf, 20)
        appended = batch
        for _ in range(20):
            buf.append([reading(appended + i) for i in range(batch)])
            appended += batch
        stats = buf.stats()
        assert stats.dropped_newest_total > 0 and stats.dropped_oldest_total == 0
        assert stats.readings + stats.dropped_newest_total == appended
        got = values(buf.take("dead", appended))
        assert got == list(range(len(got)))  # the oldest are kept
        buf.ack("dead", 10**9)  # acks still work on a full disk: they free space
        assert buf.append([reading(appended)]).accepted == 1


def test_full_disk_recovers_when_space_comes_back(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.buffer"), DurableBuffer(path) as buf:
        buf.set_sinks(["dead"])
        _limit_pages(buf, 10)
        n = 0
        for _ in range(10):
            buf.append([reading(n + i) for i in range(500)])
            n += 500
        full = buf.stats()
        assert full.disk_full_events >= 2 and full.dropped_oldest_total > 0
        _limit_pages(buf, 10_000)  # space again
        for _ in range(3):
            assert buf.append([reading(n + i) for i in range(500)]).dropped_oldest == 0
            n += 500
        assert buf.stats().readings == full.readings + 1500
        assert buf.stats().disk_full_events == full.disk_full_events
        messages = [r.message for r in caplog.records]
        assert sum("disk full" in m for m in messages) == 1
        assert sum("disk space is available again" in m for m in messages) == 1
        assert Path(f"{path}.reserve").exists()  # taken again


async def test_async_buffer_runs_everything_on_one_worker_thread(path: Path) -> None:
    buf = await AsyncBuffer.open(path, sync="normal")
    try:
        await buf.set_sinks(["a"])
        results = await asyncio.gather(*(buf.append([reading(i)]) for i in range(20)))
        assert all(r.accepted == 1 for r in results)
        items = await buf.take("a", 100)
        assert sorted(values(items)) == list(range(20))
        await buf.dead_letter("a", items[:1], "bad")
        await buf.ack("a", items[-1].id)
        stats = await buf.stats()
        assert stats.readings == 0 and stats.dead_letters_total == 1
        assert (await buf.dead_letters("a"))[0].reason == "bad"
    finally:
        await buf.close()
    held = await AsyncBuffer.open(path)
    try:
        with pytest.raises(BufferLockedError):  # a failed open raises from open() itself
            await AsyncBuffer.open(path)
    finally:
        await held.close()


class Level(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize("tail_max", [0, 4, 10_000])
def test_the_in_memory_tail_serves_exactly_what_the_file_holds(path: Path, tail_max: int) -> None:
    # Whatever serves take() (the newest readings kept in memory, or SQLite),
    # the answer is the same: ids, order, exact value types, rows gone once collected.
    buf = DurableBuffer(path, max_bytes=logical_size(reading(0)) * 12, tail_max=tail_max)
    buf.set_sinks(["a", "b"])
    buf.append([reading(i) for i in range(6)] + [reading(6, Level.LOW), reading(7, True)])
    got = buf.take("a", 100)
    assert [b.id for b in got] == list(range(1, 9))
    assert [(type(v), v) for v in values(got)][-2:] == [(int, 1), (bool, True)]  # an IntEnum is stored as int
    buf.ack("a", 5)
    buf.ack("b", 5)  # ids 1..5 (values 0..4) are collected
    assert [b.id for b in buf.take("b", 2)] == [6, 7]
    assert values(buf.take("a", 100)) == [5, 1, True]
    buf.append([reading(i) for i in range(8, 14)])  # ids 9..14: 9 rows, they fit in 12
    buf.append([reading(i) for i in range(14, 18)])  # ids 15..18: drop_oldest removes id 6
    assert buf.stats().dropped_oldest_total == 1
    got = buf.take("b", 100)
    assert [b.id for b in got] == list(range(7, 19))
    assert values(got) == [1, True, *range(8, 18)]
    assert values(buf.take("b", 3, after_id=15)) == [15, 16, 17]
    buf.append([reading(i) for i in range(100, 114)])  # 14 readings alone exceed the 12 of room
    assert values(buf.take("a", 100)) == list(range(102, 114))
    assert [b.id for b in buf.take("a", 2, after_id=16)] == [19, 20]  # ids 17, 18 were dropped
    assert values(buf.take("a", 2, after_id=27)) == [111, 112]
    got = buf.take("b", 100)
    buf.close()
    again = DurableBuffer(path, max_bytes=logical_size(reading(0)) * 12, tail_max=tail_max)
    assert [(b.id, b.reading) for b in again.take("b", 100)] == [(b.id, b.reading) for b in got]
    again.close()


@pytest.mark.parametrize("tail_max", [0, 10_000])
def test_the_in_memory_tail_holds_only_what_drop_newest_kept(path: Path, tail_max: int) -> None:
    buf = DurableBuffer(path, max_bytes=logical_size(reading(0)) * 5, overflow="drop_newest", tail_max=tail_max)
    buf.set_sinks(["a"])
    assert buf.append([reading(i) for i in range(8)]).dropped_newest == 3
    assert values(buf.take("a", 2, after_id=3)) == [3, 4]
    assert buf.append([reading(8)]).dropped_newest == 1
    assert values(buf.take("a", 2, after_id=4)) == [4]
    assert values(buf.take("a", 100)) == [0, 1, 2, 3, 4]
    buf.close()
