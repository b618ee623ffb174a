"""The buffer's SQLite schema and connection settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final, Literal

from gateway.buffer_types import BufferCorruptError

SCHEMA_VERSION: Final = 2
# SQLite's page cache, negative: in KiB. Its default (2 MiB) fills over hours and stays; a commit touches a few
# pages at the ends of two B-trees, and a replay reads the file in order, so 512 KiB serves both
# (bench/bench_buffer_frames.py: the same CPU per value appended and replayed).
CACHE_KIB: Final = -512
# v2 stores a frame as one row: ``id`` is the id of its LAST value (a frame of
# n values has the value ids id-n+1 .. id), ``kind`` holds its layout id (its
# quantities and units, and n, in ``layouts``) and payload format
# (buffer_codec.frame_kind), ``value`` the packed values, ``quality`` 0 (all
# GOOD) or one byte per value. A reading's row is as in v1 (n = 1).
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL,
    quantity TEXT NOT NULL, unit TEXT NOT NULL, tags TEXT NOT NULL,
    UNIQUE (site, gateway, device, quantity, unit, tags));
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, series INTEGER NOT NULL, ts_ns INTEGER NOT NULL,
    value, kind INTEGER NOT NULL, quality INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS layouts (
    id INTEGER PRIMARY KEY, quantities TEXT NOT NULL, units TEXT NOT NULL, n INTEGER NOT NULL,
    UNIQUE (quantities, units));
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, acked_id INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, reading_id INTEGER NOT NULL, sink TEXT NOT NULL,
    series INTEGER NOT NULL, ts_ns INTEGER NOT NULL, value, kind INTEGER NOT NULL, quality INTEGER NOT NULL,
    reason TEXT NOT NULL, dead_at_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS dead_letters_by_sink ON dead_letters (sink, seq);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, driver TEXT NOT NULL, device TEXT NOT NULL,
    raw BLOB NOT NULL, size INTEGER NOT NULL, reason TEXT NOT NULL, rejected_at_ns INTEGER NOT NULL);
"""
# v1 -> v2: a v1 file's rows are all single readings, which v2 reads as they
# are; the migration is the ``layouts`` table (CREATE IF NOT EXISTS) and the new
# version number, which makes a gateway that knows only v1 refuse the file
# (it could not read frame rows).
# The rejected table was added without a version bump: CREATE IF NOT EXISTS
# adds it to an older file, and an older gateway ignores it.

# 1000 pages of 4 KiB: the WAL is checkpointed every ~4 MB, often enough to
# keep it small, rarely enough that a checkpoint is amortised over many batches.
WAL_AUTOCHECKPOINT: Final = 1000
# Keep up to 16 MiB of WAL after a checkpoint instead of truncating it: the
# space is reused, which spares the SD card and leaves room to delete rows
# when the disk fills up.
JOURNAL_SIZE_LIMIT: Final = 16 * 1024 * 1024


def connect(
    path: Path,
    sync: Literal["full", "normal"],
    wal_autocheckpoint: int = WAL_AUTOCHECKPOINT,
    journal_size_limit: int = JOURNAL_SIZE_LIMIT,
) -> sqlite3.Connection:
    """Open (creating if needed) the buffer database in WAL mode; SQLite recovers the WAL itself.

    The connection is in autocommit mode: the buffer issues BEGIN/COMMIT itself.
    The WAL figures default to an SD card's; a small filesystem needs smaller
    ones (``gateway.buffer_disk.DiskSizes``), or the WAL alone fills it. Opening
    an existing buffer writes nothing, so it works on a full disk.
    """
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise BufferCorruptError(path, f"cannot switch to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={sync.upper()}")
        conn.execute(f"PRAGMA cache_size={CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
        conn.execute(f"PRAGMA journal_size_limit={int(journal_size_limit)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise BufferCorruptError(path, f"schema version {version} is newer than this gateway's")
        conn.executescript(SCHEMA)  # IF NOT EXISTS: no write when the tables are there
        if version != SCHEMA_VERSION:  # setting it writes, even to the same value
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BufferCorruptError(
            path, f"not a usable buffer database ({exc}); move the file aside to start an empty buffer"
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing buffer for inspection (``gateway buffer stats``) while a daemon may be writing it.

    WAL lets this reader see the last committed state without blocking the writer.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BufferCorruptError(path, f"cannot open the buffer read-only: {exc}") from exc
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        # Version 1 (an older daemon may still be running) holds only readings, which v2 reads as they are.
        if version not in (1, SCHEMA_VERSION):
            raise BufferCorruptError(path, f"schema version {version}, expected {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BufferCorruptError(path, f"not a usable buffer database ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn
