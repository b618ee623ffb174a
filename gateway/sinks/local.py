"""The ``local`` sink: an embedded SQLite time-series store with retention.

The default sink when none is configured, so a gateway with no server still
keeps its data (read it with ``gateway query`` and ``gateway tail``).

Layout (schema version 2, recorded in ``PRAGMA user_version``): a reading is
split into its *series* (site, gateway, device, quantity, unit, tags: stored
once in the ``series`` table) and its *point* (ts_ns, value, kind, quality:
one row in ``points``), like the durable buffer. That halves the bytes per
row and makes the upsert cheaper than when every row repeated its strings.
Values come back with their Python type: the ``kind`` column records what
SQLite cannot (bool, NaN, ints beyond 64 bits; see ``gateway.buffer_codec``).

Idempotency: a series and a ``ts_ns`` identify a point. Writing a point again
(the at-least-once replay after a crash) updates the one row in place: value,
kind and quality of the last write win, the row keeps its ``id`` (so ``gateway
tail``, which follows new ids, does not show it twice). A reading whose unit
or tags differ is another series, hence another point.

Version 1 (one ``points`` table holding every column, ``user_version`` 0) is
migrated in one transaction when the store is first opened read-write, ids
kept; a read-only open reads either version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field

from gateway.buffer_codec import SqlValue, decode_value, encode_value, from_sql_text, to_sql_text
from gateway.buffer_series import SeriesTable
from gateway.config_types import Duration
from gateway.model import Quality, Reading
from gateway.sink import Outcome, SendResult, Sink, SinkConfig
from gateway.sqlite_rows import insert_rows

log = logging.getLogger("gateway.sinks.local")

SCHEMA_VERSION: Final = 2

_CREATE_SERIES: Final = (
    """CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL,
        gateway TEXT NOT NULL,
        device TEXT NOT NULL,
        quantity TEXT NOT NULL,
        unit TEXT NOT NULL,
        tags TEXT NOT NULL
    )""",
    "CREATE UNIQUE INDEX series_key ON series (site, gateway, device, quantity, unit, tags)",
)
_CREATE_POINTS: Final = """CREATE TABLE points (
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL REFERENCES series (id),
    ts_ns INTEGER NOT NULL,
    value,
    kind INTEGER NOT NULL DEFAULT 0,
    quality INTEGER NOT NULL
)"""
_INDEX_POINTS: Final = (
    "CREATE UNIQUE INDEX points_series_ts ON points (series, ts_ns)",
    "CREATE INDEX points_ts ON points (ts_ns)",
)

UPSERT_HEAD: Final = "INSERT INTO points (series, ts_ns, value, kind, quality)"
UPSERT_TAIL: Final = (
    "ON CONFLICT (series, ts_ns) DO UPDATE SET value = excluded.value, kind = excluded.kind, quality = excluded.quality"
)
UPSERT: Final = f"{UPSERT_HEAD} VALUES (?, ?, ?, ?, ?) {UPSERT_TAIL}"
_SERIES_COLUMNS: Final = "site, gateway, device, quantity, unit, tags"

# Version 1 -> 2, run inside one transaction. The old indexes carry the names
# of the new ones, so they go first; the new indexes are built after the copy.
_MIGRATE_1_TO_2: Final = (
    "DROP INDEX IF EXISTS points_series_ts",
    "DROP INDEX IF EXISTS points_ts",
    "ALTER TABLE points RENAME TO points_v1",
    *_CREATE_SERIES,
    _CREATE_POINTS,
    f"INSERT INTO series ({_SERIES_COLUMNS}) SELECT DISTINCT {_SERIES_COLUMNS} FROM points_v1",
)
_COPY_POINTS_1_TO_2: Final = """
INSERT INTO points (id, series, ts_ns, value, kind, quality)
SELECT o.id, s.id, o.ts_ns, o.value, 0, o.quality
FROM points_v1 o JOIN series s ON s.site = o.site AND s.gateway = o.gateway AND s.device = o.device
    AND s.quantity = o.quantity AND s.unit = o.unit AND s.tags = o.tags
ORDER BY o.id
"""


class StoreSchemaError(sqlite3.DatabaseError):
    """The file is not a local store this version can use (the sink reports it as RETRY)."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the read queries find a point's columns in one schema version."""

    select: str  # "SELECT <the columns of StoredPoint.from_row> FROM ..."
    select_by_series: str  # the same, for a filter on device or quantity: series first
    series: str  # alias of the table holding device, quantity, ...
    latest: str


# The columns of StoredPoint.from_row, in order.
_V2_COLUMNS: Final = (
    "p.id, p.ts_ns, s.site, s.gateway, s.device, s.quantity, p.value, p.kind, s.unit, s.tags, p.quality"
)
_V1_COLUMNS: Final = "p.id, p.ts_ns, p.site, p.gateway, p.device, p.quantity, p.value, 0, p.unit, p.tags, p.quality"
_V2: Final = _Layout(
    select=f"SELECT {_V2_COLUMNS} FROM points p JOIN series s ON s.id = p.series",
    # Without statistics SQLite would walk points_ts and test every point's
    # series (a full scan for a rare device); CROSS JOIN makes it pick the
    # matching series first, then their points from points_series_ts.
    select_by_series=f"SELECT {_V2_COLUMNS} FROM series s CROSS JOIN points p ON p.series = s.id",
    series="s",
    # One index probe per series: (series, ts_ns) holds the newest point's id.
    latest=f"""
        SELECT {_V2_COLUMNS}
        FROM series s JOIN points p
            ON p.id = (SELECT q.id FROM points q WHERE q.series = s.id ORDER BY q.ts_ns DESC LIMIT 1)
        ORDER BY s.device, s.quantity, s.tags, s.unit
    """,
)
_V1: Final = _Layout(
    select=f"SELECT {_V1_COLUMNS} FROM points p",
    select_by_series=f"SELECT {_V1_COLUMNS} FROM points p",
    series="p",
    latest=f"""
        SELECT {_V1_COLUMNS}
        FROM points p JOIN (
            SELECT device, quantity, tags, MAX(ts_ns) AS ts FROM points GROUP BY device, quantity, tags
        ) m ON p.device = m.device AND p.quantity = m.quantity AND p.tags = m.tags AND p.ts_ns = m.ts
        ORDER BY p.device, p.quantity, p.tags, p.unit
    """,
)


class LocalSinkConfig(SinkConfig):
    type: Literal["local"] = "local"
    path: Path | None = Field(default=None, description="default: <state_dir>/local.sqlite")
    retention: Duration = Field(default=7 * 86400.0, gt=0, description="points older than this are deleted")


class LocalStore:
    """Synchronous access to the store file; used by the sink (on its thread) and the CLI.

    Read-write opens create or migrate the schema. ``readonly=True`` is for
    reading while a daemon writes: no schema changes, either version is read.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._layout: _Layout | None = None
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=10)
        try:
            self.conn.execute("PRAGMA busy_timeout=10000")
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self._prepare_schema()
        except BaseException:
            self.conn.close()
            raise
        self._series = SeriesTable(self.conn)

    # -- schema ------------------------------------------------------------

    def _schema_version(self) -> int:
        """0 for a file without a store (new), else the layout's version."""
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if version != 0:
            return version
        tables = {name for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "points" not in tables and "series" not in tables:
            return 0
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(points)")}
        if "series" not in tables and {"device", "site", "unit", "tags"} <= columns:
            return 1
        raise StoreSchemaError(f"{self.path} is not a local store (tables {sorted(tables)}, user_version 0)")

    def _prepare_schema(self) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version()
            if version == 0:
                for sql in (*_CREATE_SERIES, _CREATE_POINTS, *_INDEX_POINTS):
                    conn.execute(sql)
            elif version == 1:
                self._migrate_from_1()
            elif version != SCHEMA_VERSION:
                raise self._newer_error(version)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.commit()
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        self._layout = _V2

    def _migrate_from_1(self) -> None:
        conn = self.conn
        started = time.monotonic()
        expected = int(conn.execute("SELECT COUNT(*) FROM points").fetchone()[0])
        # Measured: ~0.9 s per 200,000 points on the bench VM; say so before a long wait.
        log.info(
            "local store %s: migrating %d points to schema version %d (about %.0f s; needs free disk about the "
            "file's size)",
            self.path,
            expected,
            SCHEMA_VERSION,
            expected / 200_000,
        )
        for sql in _MIGRATE_1_TO_2:
            conn.execute(sql)
        copied = conn.execute(_COPY_POINTS_1_TO_2).rowcount
        if copied != expected:  # cannot happen (every old row has its series); never drop data silently
            raise StoreSchemaError(f"{self.path}: migration copied {copied} of {expected} points; left unchanged")
        for sql in _INDEX_POINTS:
            conn.execute(sql)
        conn.execute("DROP TABLE points_v1")
        series = int(conn.execute("SELECT COUNT(*) FROM series").fetchone()[0])
        log.info(
            "local store %s: migrated %d points (%d series) to schema version %d in %.1f s",
            self.path,
            copied,
            series,
            SCHEMA_VERSION,
            time.monotonic() - started,
        )

    def _newer_error(self, version: int) -> StoreSchemaError:
        return StoreSchemaError(
            f"{self.path} has schema version {version}, newer than this gateway's ({SCHEMA_VERSION}): upgrade it"
        )

    def _read_layout(self) -> _Layout:
        if self._layout is not None:  # read-write opens, and read-only ones once version 2 is seen
            return self._layout
        # Read-only: a daemon may migrate the file while we read it, so look again until it has.
        version = self._schema_version()
        if version == 1:
            return _V1
        if version > SCHEMA_VERSION:
            raise self._newer_error(version)
        if version == SCHEMA_VERSION:
            self._layout = _V2
        return _V2  # version 0: the daemon has not created the tables yet (reads fail: no such table)

    # -- writing -----------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.commit()
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            self._series.rolled_back()
            raise
        self._series.committed()

    def write(self, batch: Sequence[Reading]) -> None:
        """Store a batch in one transaction; a point already stored is overwritten."""
        series = self._series
        by_key, tags_text = series.by_key, series.tags_text
        rows: list[tuple[int, int, SqlValue, int, int]] = []
        with self._transaction() as conn:
            for r in batch:
                tags = r.tags
                key = (r.site, r.gateway, r.device, r.quantity, r.unit, tags_text(tags) if tags else "")
                sid, _ = by_key.get(key) or series.lookup(key)
                value, kind, _ = encode_value(r.value)
                rows.append((sid, r.ts_ns, value, kind, int(r.quality)))
            insert_rows(conn, UPSERT_HEAD, rows, UPSERT_TAIL)

    def delete_older_than(self, cutoff_ns: int) -> int:
        """Delete points older than ``cutoff_ns``, then the series left without points; return points deleted."""
        with self._transaction() as conn:
            deleted = conn.execute("DELETE FROM points WHERE ts_ns < ?", (cutoff_ns,)).rowcount
            if deleted:
                # One index probe per series on points_series_ts.
                orphans = conn.execute(
                    "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM points p WHERE p.series = series.id)"
                ).rowcount
                if orphans:
                    self._series.forget_all()  # cached ids of deleted series must not be used again
        return deleted

    # -- reading -----------------------------------------------------------

    def query(
        self,
        *,
        device: str | None = None,
        quantity: str | None = None,
        since_ns: int | None = None,
        after_id: int | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[StoredPoint]:
        layout = self._read_layout()
        where: list[str] = []
        args: list[object] = []
        for column, value in (("device", device), ("quantity", quantity)):
            if value is not None:
                where.append(f"{layout.series}.{column} = ?")
                args.append(to_sql_text(value))
        if since_ns is not None:
            where.append("p.ts_ns >= ?")
            args.append(since_ns)
        if after_id is not None:
            where.append("p.id > ?")
            args.append(after_id)
        # A tail (after_id) reads the few newest ids: walking the ids is cheapest whatever the filter.
        by_series = (device is not None or quantity is not None) and after_id is None
        sql = layout.select_by_series if by_series else layout.select
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "p.id" if after_id is not None else "p.ts_ns"
        sql += f" ORDER BY {order} {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(limit)
        return [StoredPoint.from_row(row) for row in self.conn.execute(sql, args)]

    def latest(self) -> list[StoredPoint]:
        """The newest point of every series."""
        return [StoredPoint.from_row(row) for row in self.conn.execute(self._read_layout().latest)]

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def iter_all(self) -> Iterator[StoredPoint]:
        for row in self.conn.execute(self._read_layout().select + " ORDER BY p.id"):
            yield StoredPoint.from_row(row)

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True, slots=True)
class StoredPoint:
    id: int
    reading: Reading

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StoredPoint:
        """From (id, ts_ns, site, gateway, device, quantity, value, kind, unit, tags, quality)."""
        id_, ts_ns, site, gateway, device, quantity, value, kind, unit, tags, quality = row
        return cls(
            id_,
            Reading(
                ts_ns=ts_ns,
                site=from_sql_text(site),
                gateway=from_sql_text(gateway),
                device=from_sql_text(device),
                quantity=from_sql_text(quantity),
                value=decode_value(value, kind),
                unit=from_sql_text(unit),
                tags=json.loads(tags) if tags else {},
                quality=Quality(quality),
            ),
        )


class LocalSink(Sink):
    config_model = LocalSinkConfig
    RETENTION_EVERY_S = 300.0

    def __init__(self, config: SinkConfig, *, site: str, gateway: str, state_dir: Path | None = None) -> None:
        super().__init__(config, site=site, gateway=gateway, state_dir=state_dir)
        assert isinstance(config, LocalSinkConfig)
        self.local_config = config
        self.path = config.path or (state_dir or Path("state")) / "local.sqlite"
        # SQLite calls stay off the event loop, on one thread that owns the connection.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sink-{self.name}")
        self._store: LocalStore | None = None
        self._last_retention = 0.0

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open_sync(self) -> None:
        if self._store is None:
            self._store = LocalStore(self.path)

    async def open(self) -> None:
        with contextlib.suppress(OSError, sqlite3.Error):  # reported by send() as RETRY, with the reason
            await self._call(self._open_sync)

    def _send_sync(self, batch: Sequence[Reading]) -> None:
        self._open_sync()
        assert self._store is not None
        self._store.write(batch)
        now = time.monotonic()
        if now - self._last_retention > self.RETENTION_EVERY_S:
            self._last_retention = now
            self._store.delete_older_than(time.time_ns() - int(self.local_config.retention * 1e9))

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        try:
            await self._call(self._send_sync, batch)
        except (OSError, sqlite3.Error) as exc:
            return SendResult(Outcome.RETRY, f"local store {self.path}: {exc}")
        return SendResult.ok()

    async def close(self) -> None:
        def _close() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        await self._call(_close)
        self._executor.shutdown(wait=False)

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path)}
