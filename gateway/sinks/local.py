"""The ``local`` sink: an embedded SQLite time-series store with retention.

The default sink when none is configured, so a gateway with no server still
keeps its data (read it with ``gateway query`` and ``gateway tail``). Writes
are idempotent (one row per series and timestamp, like InfluxDB), so the
at-least-once replay after a crash stores no duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from gateway.config_types import Duration
from gateway.model import Quality, Reading
from gateway.sink import Outcome, SendResult, Sink, SinkConfig

SCHEMA = """
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

UPSERT = """
INSERT INTO points (ts_ns, site, gateway, device, quantity, value, unit, tags, quality)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device, quantity, tags, ts_ns) DO UPDATE SET
    value = excluded.value, unit = excluded.unit, quality = excluded.quality
"""


class LocalSinkConfig(SinkConfig):
    type: Literal["local"] = "local"
    path: Path | None = Field(default=None, description="default: <state_dir>/local.sqlite")
    retention: Duration = Field(default=7 * 86400.0, gt=0, description="points older than this are deleted")


def _tags_text(tags: Any) -> str:
    return json.dumps(dict(tags), sort_keys=True, separators=(",", ":")) if tags else ""


def _encode_value(value: object) -> object:
    # SQLite has no bool: store as 0/1 but remember the type in the JSON of the API.
    return int(value) if isinstance(value, bool) else value


class LocalStore:
    """Synchronous access to the store file; used by the sink (on its thread) and the CLI."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=10)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        self.conn.execute("PRAGMA busy_timeout=10000")

    def write(self, batch: Sequence[Reading]) -> None:
        rows = [
            (r.ts_ns, r.site, r.gateway, r.device, r.quantity, _encode_value(r.value), r.unit, _tags_text(r.tags),
             int(r.quality))
            for r in batch
        ]  # fmt: skip
        with self.conn:
            self.conn.executemany(UPSERT, rows)

    def delete_older_than(self, cutoff_ns: int) -> int:
        with self.conn:
            return self.conn.execute("DELETE FROM points WHERE ts_ns < ?", (cutoff_ns,)).rowcount

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
        where: list[str] = []
        args: list[object] = []
        for column, value in (("device", device), ("quantity", quantity)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since_ns is not None:
            where.append("ts_ns >= ?")
            args.append(since_ns)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        sql = "SELECT id, ts_ns, site, gateway, device, quantity, value, unit, tags, quality FROM points"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "id" if after_id is not None else "ts_ns"
        sql += f" ORDER BY {order} {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(limit)
        return [StoredPoint.from_row(row) for row in self.conn.execute(sql, args)]

    def latest(self) -> list[StoredPoint]:
        """The newest point of every (device, quantity, tags) series."""
        sql = """
            SELECT p.id, p.ts_ns, p.site, p.gateway, p.device, p.quantity, p.value, p.unit, p.tags, p.quality
            FROM points p JOIN (
                SELECT device, quantity, tags, MAX(ts_ns) AS ts FROM points GROUP BY device, quantity, tags
            ) m ON p.device = m.device AND p.quantity = m.quantity AND p.tags = m.tags AND p.ts_ns = m.ts
            ORDER BY p.device, p.quantity
        """
        return [StoredPoint.from_row(row) for row in self.conn.execute(sql)]

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def iter_all(self) -> Iterator[StoredPoint]:
        for row in self.conn.execute(
            "SELECT id, ts_ns, site, gateway, device, quantity, value, unit, tags, quality FROM points ORDER BY id"
        ):
            yield StoredPoint.from_row(row)

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True, slots=True)
class StoredPoint:
    id: int
    reading: Reading

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> StoredPoint:
        id_, ts_ns, site, gateway, device, quantity, value, unit, tags, quality = row
        return cls(
            id_,
            Reading(
                ts_ns=ts_ns,
                site=site,
                gateway=gateway,
                device=device,
                quantity=quantity,
                value=value,
                unit=unit,
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
