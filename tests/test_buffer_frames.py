"""Frames in the durable buffer: one row per frame, ids per value (gateway/buffer_sqlite.py).

The model-based test (test_buffer_model.py) checks random mixes against a model;
these pin the individual behaviours, the payload codec and the v1 -> v2 upgrade.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import sqlite3
from array import array
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.buffer import BufferCorruptError, DurableBuffer, logical_size
from gateway.buffer_codec import (
    KIND_FRAME_F64,
    KIND_FRAME_I64,
    KIND_FRAME_JSON,
    KIND_FRAME_MIXED,
    ROW_OVERHEAD,
    decode_frame_values,
    encode_frame_values,
    encode_value,
    item_size,
)
from gateway.frame import Frame, FrameFields
from gateway.model import Quality, Reading, Value

FIELDS = FrameFields.of(["voltage", "current", "power", "energy"], ["V", "A", "W", "Wh"])


def frame(ts: int, values: Sequence[Value], **changes: object) -> Frame:
    fields = FIELDS if len(values) == 4 else FrameFields.of([f"r{i}" for i in range(len(values))], ["V"] * len(values))
    base: dict[str, object] = {
        "ts_ns": ts,
        "site": "site-a",
        "gateway": "gw-1",
        "device": "meter-7",
        "fields": fields,
        "values": tuple(values),
        "tags": {"bus": "rs485-1"},
        "qualities": None,
    }
    base.update(changes)
    return Frame(**base)  # type: ignore[arg-type]


def exact(values: Sequence[Value]) -> list[tuple[type, str]]:
    """Type and repr tell 1 from 1.0 from True, -0.0 from 0.0, and NaN equals NaN."""
    return [(type(v), repr(v)) for v in values]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "buffer" / "readings.db"


# -- the payload codec -------------------------------------------------------

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.booleans(),
    st.text(max_size=6),  # includes lone surrogates
)


@given(
    st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=40),
        st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=40),
        st.lists(st.one_of(st.floats(), st.integers(min_value=-(2**64), max_value=2**64)), min_size=1, max_size=40),
        st.lists(scalars, min_size=1, max_size=40),
    )
)
def test_frame_values_round_trip_with_their_exact_types(values: list[Value]) -> None:
    payload, kind, size, as_stored = encode_frame_values(values)
    if {type(v) for v in values} == {float}:  # floats are kept as an array('d'): 8 bytes a value
        assert type(as_stored) is array and exact(as_stored) == exact(values)
        assert type(decode_frame_values(payload, kind)) is array  # the file gives back what the tail holds
    else:
        assert as_stored is values  # other plain types: nothing to convert
    assert exact(decode_frame_values(payload, kind)) == exact(values)
    assert size == sum(encode_value(v)[2] for v in values)  # a frame's values weigh what its readings' would
    types = {type(v) for v in values}
    if types == {float}:
        assert kind == KIND_FRAME_F64 and payload == b"".join(
            v.to_bytes(8, "little") for v in _bits(values)
        )  # little-endian IEEE doubles whatever the machine
    elif types == {int} and all(-(2**63) <= v < 2**63 for v in values):  # type: ignore[operator]
        assert kind == KIND_FRAME_I64
    elif types == {int, float} and all(-(2**63) <= v < 2**63 for v in values if type(v) is int):
        assert kind == KIND_FRAME_MIXED and isinstance(payload, bytes) and len(payload) == 9 * len(values)
    else:
        assert kind == KIND_FRAME_JSON and isinstance(payload, str) and payload.isascii()


def test_frames_are_equal_by_content_whether_their_values_are_a_tuple_or_an_array() -> None:
    values = [1.5, -0.0, 3.25]
    as_tuple = frame(5, values)
    as_array = dataclasses.replace(as_tuple, values=array("d", values))
    assert type(as_tuple.values) is tuple and type(as_array.values) is array
    assert as_tuple == as_array and hash(as_tuple) == hash(as_array)
    assert as_tuple != dataclasses.replace(as_tuple, values=array("d", [1.5, -0.0, 3.5]))
    assert as_array != frame(6, values) and as_array != frame(5, values, device="meter-8")
    assert {as_tuple, as_array} == {as_tuple}  # hashable, though an array is not


def _bits(values: Sequence[Value]) -> list[int]:
    import struct

    return [int.from_bytes(struct.pack("<d", v), "little") for v in values]


class Level(enum.IntEnum):
    HIGH = 2


class Celsius(float):
    pass


def test_value_subclasses_are_stored_as_their_base_type_and_others_refused() -> None:
    payload, kind, _, as_stored = encode_frame_values([Level.HIGH, Celsius(21.5), 3])
    assert exact(as_stored) == exact([2, 21.5, 3]) == exact(decode_frame_values(payload, kind))
    with pytest.raises(TypeError, match="float, int, bool or str, not NoneType"):
        encode_frame_values([1.0, None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not bytes"):
        encode_frame_values([b"raw"])  # type: ignore[list-item]


def test_a_frame_counts_its_series_once_and_a_one_value_frame_like_its_reading() -> None:
    f = frame(1, [230.1, 5.2, 1196.5, 123456])
    readings = f.readings()
    assert item_size(f) < sum(logical_size(r) for r in readings)
    names = sum(len(q) + len(u) for q, u in zip(FIELDS.quantities, FIELDS.units, strict=True))
    series = len("site-a") + len("gw-1") + len("meter-7") + len('{"bus":"rs485-1"}')
    assert item_size(f) == ROW_OVERHEAD + series + names + 4 * 8
    one = f.select([0])
    assert item_size(one) == logical_size(one.readings()[0])


# -- frames through the buffer ------------------------------------------------


@pytest.mark.parametrize("tail_max", [0, 10_000])  # from the file, from the in-memory tail
def test_frames_round_trip_exactly_one_row_each(path: Path, tail_max: int) -> None:
    frames = [
        frame(1, [230.1, -0.0, math.inf, math.nan]),
        frame(2, [1, 2**63 - 1, -(2**63), 0]),
        frame(
            3, [True, "ok\udc80", 2**70, 1.5], qualities=(Quality.GOOD, Quality.BAD, Quality.GOOD, Quality.UNCERTAIN)
        ),
        frame(4, [7.0], tags={}),
    ]
    lone = Reading(5, "site-a", "gw-1", "other", "temperature", 21.5, "Cel", {}, Quality.UNCERTAIN)
    with DurableBuffer(path, tail_max=tail_max) as buf:
        buf.set_sinks(["a"])
        assert buf.append([*frames, lone]).accepted == 14
        assert buf.stats().readings == 14
        assert buf._conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 5  # one row per item
        got = buf.take_frames("a", 100)
        assert [b.id for b in got] == [1, 5, 9, 13, 14]
        for b, want in zip(got, [*frames, None], strict=True):
            if want is not None:
                assert exact(b.frame.values) == exact(want.values)
                assert (b.frame.fields, dict(b.frame.tags), b.frame.qualities) == (
                    want.fields,
                    dict(want.tags),
                    want.qualities,
                )
        assert got[-1].frame.readings() == [lone]
        expanded = buf.take("a", 100)
        assert [b.id for b in expanded] == list(range(1, 15))
        assert [(b.id, b.reading) for b in expanded][4:8] == list(enumerate(frames[1].readings(), start=5))
    with DurableBuffer(path) as again:  # and from the file after a restart
        assert [(b.id, exact(b.frame.values)) for b in again.take_frames("a", 100)] == [
            (b.id, exact(b.frame.values)) for b in got
        ]


@pytest.mark.parametrize("tail_max", [0, 10_000])
def test_a_cursor_inside_a_frame_keeps_its_row_and_serves_the_rest(path: Path, tail_max: int) -> None:
    with DurableBuffer(path, tail_max=tail_max) as buf:
        buf.set_sinks(["a", "b"])
        buf.append([frame(1, [1.0, 2.0, 3.0, 4.0]), frame(2, [5.0, 6.0, 7.0, 8.0])])
        assert [b.id for b in buf.take("a", 3)] == [1, 2, 3]
        buf.ack("a", 3)
        buf.ack("b", 6)  # both inside a frame: the first frame's row goes only with its last value
        stats = buf.stats()
        assert stats.readings == 8 and stats.sinks["a"].pending == 5 and stats.sinks["b"].pending == 2
        rest = buf.take_frames("a", 1)  # at least one frame, cut at the cursor
        assert [(b.id, tuple(b.frame.values), b.frame.fields.quantities) for b in rest] == [(4, (4.0,), ("energy",))]
        assert [(b.id, tuple(b.frame.values)) for b in buf.take_frames("b", 100)] == [(7, (7.0, 8.0))]
        assert [(b.id, tuple(b.frame.values)) for b in buf.take_frames("a", 4, after_id=4)] == [
            (5, (5.0, 6.0, 7.0, 8.0))
        ]
        buf.ack("a", 4)
        stats = buf.stats()
        assert stats.readings == 4  # the first frame is gone, whole
        assert stats.oldest_ts_ns == 2 and stats.sinks["b"].oldest_pending_ts_ns == 2
    with DurableBuffer(path) as again:
        assert again.stats().readings == 4
        assert [b.id for b in again.take("b", 10)] == [7, 8]


def test_take_frames_returns_whole_frames_up_to_the_limit(path: Path) -> None:
    with DurableBuffer(path, tail_max=0) as buf:
        buf.set_sinks(["a"])
        buf.append([frame(i, [float(i)] * 4) for i in range(5)])
        assert [b.id for b in buf.take_frames("a", 9)] == [1, 5]  # a third frame would make 12
        assert [b.id for b in buf.take_frames("a", 2)] == [1]  # never less than one frame
        readings = [Reading(10, "site-a", "gw-1", "d", q, 1.0, "V") for q in ("a", "b", "c")]
        buf.append(readings)
        got = buf.take_frames("a", 100, after_id=20)
        assert [(b.id, b.frame.fields.quantities) for b in got] == [(21, ("a", "b", "c"))]  # grouped


def test_drop_oldest_deletes_whole_frames_and_counts_values_exactly(path: Path) -> None:
    size = item_size(frame(0, [0.0] * 4))
    with DurableBuffer(path, max_bytes=size * 3) as buf:
        buf.set_sinks(["a", "b"])
        buf.append([frame(i, [float(i)] * 4) for i in range(3)])
        buf.ack("a", 2)
        buf.ack("b", 2)  # values 1, 2 delivered to both: the first row stays (its values 3, 4 are not)
        result = buf.append([frame(3, [3.0] * 4)])
        # The first frame is deleted whole; its two acked values were delivered, so 2 are dropped, not 4.
        assert (result.accepted, result.dropped_oldest, result.dropped_newest) == (4, 2, 0)
        stats = buf.stats()
        assert (stats.readings, stats.dropped_oldest_total, stats.bytes) == (12, 2, size * 3)
        assert [b.id for b in buf.take("a", 100)][:1] == [5]
        result = buf.append([frame(4, [4.0] * 4), frame(5, [5.0] * 4), frame(6, [6.0] * 4), frame(7, [7.0] * 4)])
        # The batch alone is bigger than the buffer: its oldest frame goes too.
        assert (result.accepted, result.dropped_oldest) == (12, 4 + 12)
        assert [b.frame.ts_ns for b in buf.take_frames("b", 100)] == [5, 6, 7]
    with DurableBuffer(path) as again:
        assert again.stats().dropped_oldest_total == 2 + 16


def test_drop_newest_keeps_the_whole_frames_that_fit(path: Path) -> None:
    size = item_size(frame(0, [0.0] * 4))
    with DurableBuffer(path, max_bytes=size * 2 + 10, overflow="drop_newest") as buf:
        buf.set_sinks(["a"])
        result = buf.append([frame(0, [0.0] * 4), frame(1, [1.0] * 4), frame(2, [2.0] * 4)])
        assert (result.accepted, result.dropped_newest) == (8, 4)
        assert buf.stats().readings == 8
        assert [b.frame.ts_ns for b in buf.take_frames("a", 100)] == [0, 1]


def test_dead_letters_of_frame_values_are_per_value(path: Path) -> None:
    with DurableBuffer(path) as buf:
        buf.set_sinks(["a"])
        buf.append([frame(1, [1.0, 2.0, 3.0, 4.0])])
        refused = buf.take("a", 4)[2:3]  # the dispatcher bisected down to one value
        buf.dead_letter("a", refused, "400: bad field")
        buf.ack("a", 4)
        (letter,) = buf.dead_letters("a")
        assert (letter.id, letter.reading) == (3, frame(1, [1.0, 2.0, 3.0, 4.0]).readings()[2])
        assert buf.stats().readings == 0


# -- schema v1 -> v2 ----------------------------------------------------------

# The schema of the previous release (user_version 1), as it created a buffer file.
V1_SCHEMA = """
CREATE TABLE series (
    id INTEGER PRIMARY KEY, site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL,
    quantity TEXT NOT NULL, unit TEXT NOT NULL, tags TEXT NOT NULL,
    UNIQUE (site, gateway, device, quantity, unit, tags));
CREATE TABLE readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, series INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    value, kind INTEGER NOT NULL, quality INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TABLE cursors (sink TEXT PRIMARY KEY, acked_id INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, reading_id INTEGER NOT NULL, sink TEXT NOT NULL,
    series INTEGER NOT NULL, ts_ns INTEGER NOT NULL, value, kind INTEGER NOT NULL, quality INTEGER NOT NULL,
    reason TEXT NOT NULL, dead_at_ns INTEGER NOT NULL);
CREATE INDEX dead_letters_by_sink ON dead_letters (sink, seq);
PRAGMA user_version = 1;
"""


def make_v1_buffer(path: Path) -> list[Reading]:
    """A v1 buffer as the previous release left it: sink "a" acked id 2 of 5, id 1 collected."""
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V1_SCHEMA)
    stored: list[tuple[Value, Quality]] = [
        (1, Quality.GOOD),
        (2.5, Quality.GOOD),
        (True, Quality.BAD),
        (math.nan, Quality.GOOD),
        ("x", Quality.GOOD),
    ]
    readings = [
        Reading(10 + i, "site-a", "gw-1", "meter-7", "sequence", v, "count", {"k": "v"}, q)
        for i, (v, q) in enumerate(stored)
    ]
    conn.execute("INSERT INTO series VALUES (1, 'site-a', 'gw-1', 'meter-7', 'sequence', 'count', '{\"k\":\"v\"}')")
    for r in readings:
        value, kind, _ = encode_value(r.value)
        conn.execute(
            "INSERT INTO readings (series, ts_ns, value, kind, quality, size) VALUES (1, ?, ?, ?, ?, ?)",
            (r.ts_ns, value, kind, int(r.quality), logical_size(r)),
        )
    conn.execute("DELETE FROM readings WHERE id = 1")
    conn.execute("INSERT INTO cursors VALUES ('a', 2), ('b', 1)")
    conn.execute("INSERT INTO counters VALUES ('dropped_oldest', 3)")
    conn.close()
    return readings


def test_a_v1_buffer_is_upgraded_and_every_reading_delivered(path: Path) -> None:
    readings = make_v1_buffer(path)
    with DurableBuffer(path, read_only=True) as ro:  # inspection while the old daemon still runs: no upgrade
        assert (ro.stats().readings, ro.stats().sinks["a"].pending) == (4, 3)
        assert ro._conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with DurableBuffer(path) as buf:
        assert buf._conn.execute("PRAGMA user_version").fetchone()[0] == 2
        stats = buf.stats()
        assert (stats.readings, stats.dropped_oldest_total, stats.sinks["a"].pending) == (4, 3, 3)
        # (NaN != NaN: values compared by type and repr, the rest of the reading by ==)
        assert [(b.id, exact([b.reading.value]), b.reading.with_changes(value=0)) for b in buf.take("b", 10)] == [
            (i, exact([r.value]), r.with_changes(value=0)) for i, r in enumerate(readings, start=1)
        ][1:]
        assert [b.id for b in buf.take("a", 10)] == [3, 4, 5]
        assert buf.append([frame(20, [1.0, 2.0, 3.0, 4.0])]).accepted == 4
        assert [b.id for b in buf.take_frames("a", 100, after_id=5)] == [6]
        buf.ack("a", 9)
        buf.ack("b", 9)
        assert buf.stats().readings == 0
    with DurableBuffer(path, read_only=True) as ro:  # upgraded: inspection works now
        assert ro.stats().readings == 0


def test_a_newer_schema_is_refused(path: Path) -> None:
    DurableBuffer(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with pytest.raises(BufferCorruptError, match="schema version 3 is newer"):
        DurableBuffer(path)


def test_the_tail_holds_many_frame_values_but_few_single_readings(path: Path) -> None:
    # A value in a frame costs ~30 bytes, a Reading ~200: the tail is bounded in values and in items.
    with DurableBuffer(path, sync="normal") as buffer:
        buffer.set_sinks(["s"])
        frames = [frame(ts, [float(i) for i in range(40)]) for ts in range(2_000)]  # 80k values
        buffer.append(frames)
        assert buffer._tail.values == 80_000  # all served from memory
        got = buffer.take_frames("s", 100_000)
        assert [f.frame for f in got] == frames
        readings = [Reading(ts, "s", "g", "d", "temperature", 1.0, "Cel") for ts in range(15_000)]
        buffer.append(readings)
        assert len(buffer._tail._items) == 10_000  # the newest single readings only
        assert [b.reading for b in buffer.take("s", 10_000, after_id=80_000 + 5_000)] == readings[5_000:]
