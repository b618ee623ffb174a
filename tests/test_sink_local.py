"""The local store and sink, on real SQLite files: idempotency, value types, queries, retention, migration."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Quality, Reading, Value
from gateway.sink import Outcome
from gateway.sinks.local import LocalSink, LocalSinkConfig, LocalStore, StoredPoint, StoreSchemaError

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000

# The version-1 layout, as the gateway wrote it before series were normalised
# (gateway/sinks/local.py SCHEMA and UPSERT up to schema version 2).
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY,
    ts_ns INTEGER NOT NULL,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    value,
    unit TEXT NOT NULL,
    tags TEXT NOT NULL,
    quality INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS points_series_ts ON points (device, quantity, tags, ts_ns);
CREATE INDEX IF NOT EXISTS points_ts ON points (ts_ns);
"""
OLD_UPSERT = """
INSERT INTO points (ts_ns, site, gateway, device, quantity, value, unit, tags, quality)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device, quantity, tags, ts_ns) DO UPDATE SET
    value = excluded.value, unit = excluded.unit, quality = excluded.quality
"""


def reading(
    ts_ns: int = T0,
    device: str = "d",
    quantity: str = "temperature",
    value: Value = 21.5,
    unit: str = "Cel",
    tags: Mapping[str, str] | None = None,
    quality: Quality = Quality.GOOD,
) -> Reading:
    return Reading(ts_ns=ts_ns, site="s", gateway="g", device=device, quantity=quantity, value=value, unit=unit,
                   tags=tags or {}, quality=quality)  # fmt: skip


def key(r: Reading) -> tuple[object, ...]:
    """Everything a stored reading must give back (tags as a plain dict)."""
    return (r.ts_ns, r.site, r.gateway, r.device, r.quantity, r.value, r.unit, dict(r.tags), r.quality)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore(tmp_path / "local.sqlite")
    yield s
    s.close()


def series_rows(store: LocalStore) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM series").fetchone()[0])


# -- idempotency and series identity -------------------------------------------


def test_a_replayed_batch_is_stored_once(store: LocalStore) -> None:
    batch = [reading(T0 + i * S, value=float(i)) for i in range(50)]
    store.write(batch)
    ids = [p.id for p in store.iter_all()]
    store.write(batch)
    assert store.count() == 50
    assert [p.id for p in store.iter_all()] == ids
    assert [key(p.reading) for p in store.iter_all()] == [key(r) for r in batch]


def test_a_changed_value_for_the_same_series_and_time_overwrites(store: LocalStore) -> None:
    store.write([reading(T0, value=1.0), reading(T0 + S, value=2.0)])
    first_id = store.query(limit=1)[0].id
    store.write([reading(T0, value=9.0, quality=Quality.BAD)])
    points = store.query()
    assert [(p.reading.ts_ns, p.reading.value, p.reading.quality) for p in points] == [
        (T0, 9.0, Quality.BAD),
        (T0 + S, 2.0, Quality.GOOD),
    ]
    assert points[0].id == first_id  # updated in place: a tail does not show it again


def test_tags_and_units_make_distinct_series(store: LocalStore) -> None:
    store.write([
        reading(value=1.0),
        reading(value=2.0, tags={"probe": "a"}),
        reading(value=3.0, tags={"probe": "b"}),
        reading(value=4.0, unit="K"),
        reading(value=5.0, device="other"),
        reading(value=6.0, quantity="pressure"),
    ])  # fmt: skip
    assert store.count() == 6
    assert series_rows(store) == 6
    by_value = {p.reading.value: p.reading for p in store.iter_all()}
    assert dict(by_value[2.0].tags) == {"probe": "a"}
    assert by_value[4.0].unit == "K"


def test_tag_order_does_not_make_another_series(store: LocalStore) -> None:
    store.write([reading(value=1.0, tags={"a": "1", "b": "2"})])
    store.write([reading(value=2.0, tags={"b": "2", "a": "1"})])
    assert store.count() == 1
    assert store.query()[0].reading.value == 2.0


@pytest.mark.parametrize(
    "value",
    [21.5, -3.25, 0.0, 1e300, math.inf, 7, 0, -42, 2**63 - 1, -(2**63), 2**70, -(2**80), True, False,
     "", "open", "über ☃"],
)  # fmt: skip
def test_values_round_trip_with_their_type(store: LocalStore, value: Value) -> None:
    store.write([reading(value=value)])
    got = store.query()[0].reading.value
    assert type(got) is type(value)
    assert got == value


def test_nan_round_trips(store: LocalStore) -> None:
    store.write([reading(value=math.nan)])
    got = store.query()[0].reading.value
    assert isinstance(got, float)
    assert math.isnan(got)


def test_a_failed_batch_leaves_no_cached_series_behind(store: LocalStore) -> None:
    # The new series "ghost" is interned, then the batch fails and rolls back.
    with pytest.raises(TypeError):
        store.write([reading(device="ghost"), reading(device="ghost", ts_ns=T0 + S, value=[1])])  # type: ignore[arg-type]
    assert store.count() == 0
    assert series_rows(store) == 0
    # "other" now takes the id the rolled-back series had; a stale cache would file ghost's point under it.
    store.write([reading(device="other", value=1.0)])
    store.write([reading(device="ghost", value=2.0)])
    assert [(p.reading.device, p.reading.value) for p in store.iter_all()] == [("other", 1.0), ("ghost", 2.0)]
    assert [p.reading.value for p in store.query(device="ghost")] == [2.0]
    assert [p.reading.value for p in store.query(device="other")] == [1.0]
    assert series_rows(store) == 2


# -- reading -------------------------------------------------------------------


@pytest.fixture
def filled(store: LocalStore) -> LocalStore:
    # 2 devices x 2 quantities x 5 instants; written newest instant first so ids and times disagree.
    batch = [
        reading(T0 + t * S, device=dev, quantity=q, value=t + (10 if dev == "b" else 0) + (100 if q == "p" else 0))
        for t in reversed(range(5))
        for dev in ("a", "b")
        for q in ("t", "p")
    ]
    store.write(batch)
    return store


def values(points: list[StoredPoint]) -> list[Value]:
    return [p.reading.value for p in points]


def test_query_filters_by_device_and_quantity(filled: LocalStore) -> None:
    assert values(filled.query(device="a", quantity="t")) == [0, 1, 2, 3, 4]
    assert values(filled.query(device="b", quantity="p")) == [110, 111, 112, 113, 114]
    assert sorted(values(filled.query(device="a"))) == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert sorted(values(filled.query(quantity="t"))) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert filled.query(device="nope") == []
    assert len(filled.query()) == 20


def test_query_since_limit_and_newest_first(filled: LocalStore) -> None:
    assert values(filled.query(device="a", quantity="t", since_ns=T0 + 3 * S)) == [3, 4]
    assert values(filled.query(device="a", quantity="t", limit=2)) == [0, 1]
    assert values(filled.query(device="a", quantity="t", limit=2, newest_first=True)) == [4, 3]
    newest = filled.query(limit=4, newest_first=True)
    assert {p.reading.ts_ns for p in newest} == {T0 + 4 * S}
    assert all(p.reading.ts_ns >= T0 + 2 * S for p in filled.query(since_ns=T0 + 2 * S))
    assert len(filled.query(since_ns=T0 + 2 * S)) == 12


def test_query_after_id_follows_ids_not_times(filled: LocalStore) -> None:
    all_points = list(filled.iter_all())
    cut = all_points[7].id
    after = filled.query(after_id=cut)
    assert [p.id for p in after] == [p.id for p in all_points[8:]]
    assert [p.id for p in filled.query(after_id=cut, device="b", quantity="t")] == [
        p.id for p in all_points[8:] if (p.reading.device, p.reading.quantity) == ("b", "t")
    ]
    assert [p.id for p in filled.query(after_id=cut, limit=3)] == [p.id for p in all_points[8:11]]


def test_iter_all_is_in_write_order(filled: LocalStore) -> None:
    points = list(filled.iter_all())
    assert len(points) == 20
    assert [p.id for p in points] == sorted(p.id for p in points)
    # The batch was written newest instant first: ids ascend while times descend.
    assert [p.reading.ts_ns for p in points[::4]] == [T0 + t * S for t in reversed(range(5))]


def test_latest_is_the_newest_point_of_every_series(filled: LocalStore) -> None:
    filled.write([reading(T0 - S, device="a", quantity="t", value=-1)])  # older, but the highest id
    latest = filled.latest()
    assert [(p.reading.device, p.reading.quantity, p.reading.value) for p in latest] == [
        ("a", "p", 104),
        ("a", "t", 4),
        ("b", "p", 114),
        ("b", "t", 14),
    ]
    assert {p.reading.ts_ns for p in latest} == {T0 + 4 * S}


def test_latest_tells_series_apart_by_tags(store: LocalStore) -> None:
    store.write([reading(T0, value=1.0, tags={"probe": "in"}), reading(T0 + S, value=2.0, tags={"probe": "out"})])
    assert sorted((p.reading.tags["probe"], p.reading.value) for p in store.latest()) == [("in", 1.0), ("out", 2.0)]


# -- retention -----------------------------------------------------------------


def test_retention_deletes_old_points_and_orphaned_series(store: LocalStore) -> None:
    store.write([reading(T0 + t * S, device="gone", value=float(t)) for t in range(3)])
    store.write([reading(T0 + t * S, device="kept", value=float(t)) for t in range(6)])
    assert series_rows(store) == 2
    assert store.delete_older_than(T0 + 4 * S) == 3 + 4
    assert [(p.reading.device, p.reading.value) for p in store.iter_all()] == [("kept", 4.0), ("kept", 5.0)]
    assert series_rows(store) == 1
    assert store.delete_older_than(T0 + 4 * S) == 0


def test_a_series_deleted_by_retention_can_be_written_again(store: LocalStore) -> None:
    store.write([reading(T0, device="a", value=1.0)])
    store.delete_older_than(T0 + S)
    assert series_rows(store) == 0
    store.write([reading(T0 + 2 * S, device="b", value=2.0)])  # may take the deleted series' id
    store.write([reading(T0 + 3 * S, device="a", value=3.0)])
    assert [(p.reading.device, p.reading.value) for p in store.iter_all()] == [("b", 2.0), ("a", 3.0)]
    assert [p.reading.value for p in store.query(device="a")] == [3.0]


# -- read-only -----------------------------------------------------------------


def test_read_only_sees_what_a_writer_committed(tmp_path: Path) -> None:
    path = tmp_path / "local.sqlite"
    writer = LocalStore(path)
    reader = LocalStore(path, readonly=True)
    try:
        writer.write([reading(T0, value=1.0, tags={"k": "v"})])
        assert [key(p.reading) for p in reader.iter_all()] == [key(reading(T0, value=1.0, tags={"k": "v"}))]
        writer.write([reading(T0 + S, value=True)])
        assert values(reader.query(newest_first=True, limit=1)) == [True]
        assert reader.count() == 2
        assert values(reader.latest()) == [True, 1.0]  # ordered by device, quantity, then tags: "" < '{"k":"v"}'
        with pytest.raises(sqlite3.OperationalError):
            reader.write([reading(T0 + 2 * S)])
    finally:
        reader.close()
        writer.close()
    reopened = LocalStore(path, readonly=True)
    assert reopened.count() == 2
    reopened.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "local.sqlite"
    LocalStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    with pytest.raises(StoreSchemaError, match="schema version 3"):
        LocalStore(path)
    ro = LocalStore(path, readonly=True)
    try:
        with pytest.raises(StoreSchemaError, match="schema version 3"):
            ro.query()
    finally:
        ro.close()


# -- migration from the version-1 layout ----------------------------------------


def old_store(path: Path) -> list[tuple[Any, ...]]:
    """A store file as the previous version wrote it; returns its rows as (id, reading key)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(OLD_SCHEMA)
    rows = [(T0 + t * S, "s", "g", dev, q, value, unit, tags, int(quality))
            for t in range(20)
            for dev, q, value, unit, tags, quality in (
                ("a", "temperature", 20.0 + t / 4, "Cel", "", Quality.GOOD),
                ("a", "temperature", 5.0 - t, "Cel", '{"probe":"out"}', Quality.GOOD),
                ("b", "counter", 1000 * t, "count", "", Quality.UNCERTAIN),
                ("b", "state", "on" if t % 2 else "off", "/", '{"a":"1","b":"x"}', Quality.GOOD),
                ("c", "alarm", int(t % 3 == 0), "/", "", Quality.BAD),  # bools were stored as 0/1
            )]  # fmt: skip
    with conn:
        conn.executemany(OLD_UPSERT, rows)
        conn.executemany(OLD_UPSERT, rows[:10])  # the old store's own idempotency
        conn.execute("DELETE FROM points WHERE id IN (3, 4, 50)")  # retention left gaps in the ids
    stored: list[tuple[Any, ...]] = [
        (id_, ts, site, gw, dev, q, value, unit, tags, Quality(quality))
        for id_, ts, site, gw, dev, q, value, unit, tags, quality in conn.execute(
            "SELECT id, ts_ns, site, gateway, device, quantity, value, unit, tags, quality FROM points ORDER BY id"
        )
    ]
    conn.close()
    assert len(stored) == 97
    return stored


def as_old_rows(store: LocalStore) -> list[tuple[Any, ...]]:
    return [
        (p.id, r.ts_ns, r.site, r.gateway, r.device, r.quantity, r.value, r.unit,
         json.dumps(dict(r.tags), sort_keys=True, separators=(",", ":")) if r.tags else "", r.quality)
        for p in store.iter_all()
        for r in (p.reading,)
    ]  # fmt: skip


def test_an_old_store_is_migrated_on_open_without_losing_a_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "local.sqlite"
    before = old_store(path)
    caplog.set_level(logging.INFO, logger="gateway.sinks.local")
    store = LocalStore(path)
    try:
        assert as_old_rows(store) == before  # same ids, same order, same values
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert series_rows(store) == 5
        assert "device" not in {row[1] for row in store.conn.execute("PRAGMA table_info(points)")}
        assert store.conn.execute("SELECT name FROM sqlite_master WHERE name = 'points_v1'").fetchone() is None
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # The migrated store behaves like a new one: a replay of an old point updates it in place.
        store.write([Reading(ts_ns=T0, site="s", gateway="g", device="a", quantity="temperature", value=99.0,
                             unit="Cel")])  # fmt: skip
        assert store.count() == 97
        assert values(store.query(device="a", quantity="temperature", limit=1)) == [99.0]
        next_id = max(row[0] for row in before) + 1
        store.write([reading(T0 + 100 * S, device="new")])
        assert store.query(device="new")[0].id == next_id
    finally:
        store.close()
    migrations = [r for r in caplog.records if r.name == "gateway.sinks.local" and r.levelno == logging.INFO]
    assert len(migrations) == 2  # one line before (with an estimate), one after
    assert "migrating 97 points" in migrations[0].getMessage()
    assert "migrated 97 points" in migrations[1].getMessage()
    caplog.clear()
    LocalStore(path).close()  # opened again: nothing left to migrate
    assert not [r for r in caplog.records if r.name == "gateway.sinks.local"]


def test_a_read_only_open_reads_an_old_store_without_migrating_it(tmp_path: Path) -> None:
    path = tmp_path / "local.sqlite"
    before = old_store(path)
    ro = LocalStore(path, readonly=True)
    try:
        assert as_old_rows(ro) == before
        assert ro.count() == 97
        assert values(ro.query(device="b", quantity="counter", since_ns=T0 + 17 * S)) == [17000, 18000, 19000]
        assert [(p.reading.device, p.reading.quantity, dict(p.reading.tags)) for p in ro.latest()] == [
            ("a", "temperature", {}),
            ("a", "temperature", {"probe": "out"}),
            ("b", "counter", {}),
            ("b", "state", {"a": "1", "b": "x"}),
            ("c", "alarm", {}),
        ]
        assert {p.reading.ts_ns for p in ro.latest()} == {T0 + 19 * S}
        assert ro.conn.execute("PRAGMA user_version").fetchone()[0] == 0
        # A daemon migrates the file while the reader stays open: the reader follows.
        LocalStore(path).close()
        assert as_old_rows(ro) == before
        assert values(ro.query(device="b", quantity="counter", since_ns=T0 + 17 * S)) == [17000, 18000, 19000]
    finally:
        ro.close()


# -- the sink ------------------------------------------------------------------


async def test_sink_stores_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "state" / "local.sqlite"
    sink = LocalSink(LocalSinkConfig(type="local", path=path), site="s", gateway="g")
    now = time.time_ns()
    batch = [reading(now - 10 * S + i * S, value=float(i)) for i in range(10)]
    await sink.open()
    try:
        result = await sink.send(batch)
        assert result.outcome is Outcome.ACCEPTED
        assert (await sink.send(batch)).outcome is Outcome.ACCEPTED  # replayed
    finally:
        await sink.close()
    store = LocalStore(path, readonly=True)
    try:
        assert [key(p.reading) for p in store.iter_all()] == [key(r) for r in batch]
    finally:
        store.close()


async def test_sink_applies_retention(tmp_path: Path) -> None:
    path = tmp_path / "local.sqlite"
    sink = LocalSink(LocalSinkConfig(type="local", path=path, retention=3600.0), site="s", gateway="g")
    sink.RETENTION_EVERY_S = 0.0  # on every send
    now = time.time_ns()
    await sink.open()
    try:
        result = await sink.send([reading(now - 7200 * S, device="old"), reading(now - 60 * S, device="recent")])
        assert result.outcome is Outcome.ACCEPTED
    finally:
        await sink.close()
    store = LocalStore(path, readonly=True)
    try:
        assert [p.reading.device for p in store.iter_all()] == ["recent"]
    finally:
        store.close()


async def test_sink_reports_an_unwritable_path_as_retry(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = blocker / "local.sqlite"
    sink = LocalSink(LocalSinkConfig(type="local", path=path), site="s", gateway="g")
    await sink.open()  # does not raise: the failure is reported by send
    try:
        result = await sink.send([reading()])
    finally:
        await sink.close()
    assert result.outcome is Outcome.RETRY
    assert str(path) in result.detail
