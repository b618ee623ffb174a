"""The durable buffer: readings and frames on local disk in SQLite (WAL), one cursor per sink.

See docs/durability.md for what survives a crash or a power cut. Invariants the
code relies on (and tests/test_buffer_model.py checks):

* ids are per VALUE. A row holds one reading or one frame of n values, which
  has the value ids [id - n + 1, id]: its INTEGER PRIMARY KEY is the id of its
  last value. Ids are assigned in one writer (AUTOINCREMENT keeps
  sqlite_sequence at the last one), so the rows always cover the contiguous
  value ids [first_id, last_id]; rows only ever leave whole, from the old end
  (all sinks acked their last value, or drop_oldest). Counts are arithmetic.
* cursors, acks, in-flight ranges and dead letters are value ids; a cursor may
  sit inside a frame (its row stays until every sink has acked all of it).
* in-memory state (bytes, ids, cursors, counters) changes only after COMMIT.
* the tail cache holds exactly the committed items with value ids
  [tail.first, last_id] (or nothing), each equal to what SQLite would return.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Final, Literal, NamedTuple

from gateway import buffer_deadletters as deadletters
from gateway import buffer_rejected as rejected
from gateway.buffer_codec import (
    FRAME_KIND_MIN,
    FRAME_SHIFT,
    ROW_OVERHEAD,
    SqlValue,
    decode_frame_values,
    decode_qualities,
    decode_value,
    encode_frame_values,
    encode_qualities,
    encode_value,
    frame_kind,
    frame_layout,
    quality_of,
)
from gateway.buffer_disk import DiskGuard, is_disk_full
from gateway.buffer_items import StoredItem, Tail, frames_from, readings_from
from gateway.buffer_schema import connect, connect_read_only
from gateway.buffer_series import LayoutTable, SeriesTable
from gateway.buffer_types import (
    AppendResult,
    BufferCorruptError,
    BufferedFrame,
    BufferedReading,
    BufferFullError,
    BufferLockedError,
    BufferStats,
    DeadLetter,
    DurableBufferError,
    RejectedMessage,
    SinkStats,
    UnknownSinkError,
)
from gateway.frame import Frame, Item, count_values, make_frame
from gateway.model import make_reading
from gateway.sqlite_rows import insert_rows

log = logging.getLogger("gateway.buffer")

Overflow = Literal["drop_oldest", "drop_newest"]
Sync = Literal["full", "normal"]

_INSERT_HEAD: Final = "INSERT INTO readings (id, series, ts_ns, value, kind, quality, size)"
# The first row returned holds value id ? + 1 (a row's id is its last value's).
_SELECT: Final = "SELECT id, series, ts_ns, value, kind, quality FROM readings WHERE id > ? ORDER BY id LIMIT ?"
Row = tuple[int, int, int, SqlValue, int, int | bytes, int]  # as in _INSERT_HEAD
# Values per row: 1 for a reading, its layout's n for a frame (buffer_schema).
_ROW_VALUES: Final = f"CASE WHEN r.kind < {FRAME_KIND_MIN} THEN 1 ELSE l.n END"
_ROWS_WITH_LAYOUT: Final = (
    f"readings r LEFT JOIN layouts l ON r.kind >= {FRAME_KIND_MIN} AND l.id = r.kind >> {FRAME_SHIFT}"
)
# dropped_in_flight: readings drop_oldest deleted while the only sink's dispatcher
# held them in memory; counted as dropped only if they are never acknowledged
# (see ``_settle_in_flight``), all of them at the next open after a crash.
_COUNTERS: Final = ("dropped_oldest", "dropped_newest", "dead_letters", "dropped_in_flight", "rejected")

_OVERFLOW_CLEAR: Final = 0.9  # overflow "recovers" once below 90 % of the budget
# The newest readings are also kept in memory (the "tail"), so that a sink
# keeping up is served without a SELECT and without rebuilding each Reading:
# that was 4.4 of the ~25 us a reading cost on the way to the local sink.
# Two dispatcher batches (take + prefetch) of the default size fit. In frames a
# value costs ~30 bytes, so the tail holds up to 100k values (~3 MB) in at most
# 10k items: at 50k values/s a sink half a second behind (one commit in flight,
# one batch on the wire) was read back from the file, 6 % of the daemon's CPU.
_TAIL_MAX: Final = 100_000
_TAIL_MAX_ITEMS: Final = 10_000
_INT_MAX: Final = 2**63 - 1
# Deleted per transaction when the disk is full: at most this many rows and this
# much logical size (a few pages of WAL; 500 readings, or 40 frames of 100 floats).
_COLLECT_STEP: Final = 500
_COLLECT_STEP_BYTES: Final = 32 * 1024


class Deleted(NamedTuple):
    """What a delete of old rows removed: values, logical bytes, and the last value id (None: nothing)."""

    values: int
    bytes: int
    end: int | None


_NOTHING: Final = Deleted(0, 0, None)


class DurableBuffer:
    """Synchronous buffer; owned by ONE thread (the SQLite connection checks it)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 256 * 1024**2,
        overflow: Overflow = "drop_oldest",
        sync: Sync = "full",
        max_dead_letters: int = 10_000,
        max_rejected: int = 1_000,
        read_only: bool = False,
        tail_max: int = _TAIL_MAX,
    ) -> None:
        """Open (creating if needed) and recover the buffer at ``path``.

        ``read_only=True`` is for inspection while a daemon owns the buffer:
        no lock, no writes (they raise DurableBufferError), the file must exist.
        """
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be drop_oldest or drop_newest, not {overflow!r}")
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be full or normal, not {sync!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.overflow: Overflow = overflow
        self.sync: Sync = sync
        self.max_dead_letters = max_dead_letters
        self.max_rejected = max_rejected
        self.read_only = read_only
        self.tail_max = tail_max
        self._lock_fd: int | None = None
        if read_only:
            self._conn = connect_read_only(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._disk = DiskGuard(self.path, max_bytes)  # its WAL figures are sized to the filesystem
        if not read_only:
            self._lock_fd = self._lock()
            try:
                sizes = self._disk.sizes
                self._conn = connect(self.path, self.sync, sizes.wal_autocheckpoint_pages, sizes.journal_size_limit)
            except BaseException:
                os.close(self._lock_fd)
                raise
        self._series = SeriesTable(self._conn)
        self._layouts = LayoutTable(self._conn)
        self._closed = False
        self._overflowing = False
        self._state_dirty = False  # counters/cursors changed in memory only (disk full, recovery)
        self._recover()
        if not read_only:
            self._disk.start(max_bytes)

    # -- opening ---------------------------------------------------------

    def _lock(self) -> int:
        # SQLite's own locks allow several writers in turn; two gateways
        # sharing one buffer would steal each other's readings, so refuse.
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BufferLockedError(self.path, "buffer is in use by another gateway process") from None
        return fd

    def _recover(self) -> None:
        if self.read_only:
            # Another process writes: read every table from one snapshot.
            in_tx = self._conn.in_transaction
            if not in_tx:
                self._conn.execute("BEGIN")
            try:
                self._recover_snapshot()
            finally:
                if not in_tx:
                    self._conn.execute("COMMIT")
        else:
            self._recover_snapshot()

    def _recover_snapshot(self) -> None:
        conn = self._conn
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='readings'").fetchone()
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='layouts'").fetchone():
            count, total = conn.execute(
                f"SELECT coalesce(sum({_ROW_VALUES}), 0), coalesce(sum(r.size), 0) FROM {_ROWS_WITH_LAYOUT}"
            ).fetchone()
            first = conn.execute(
                f"SELECT r.id - ({_ROW_VALUES}) + 1 FROM {_ROWS_WITH_LAYOUT} ORDER BY r.id LIMIT 1"
            ).fetchone()
        else:  # a v1 file, inspected read-only while an older daemon still runs: readings only
            count, total = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM readings").fetchone()
            first = conn.execute("SELECT id FROM readings ORDER BY id LIMIT 1").fetchone()
        self._last_id: int = seq[0] if seq else 0
        self._first_id: int = first[0] if first is not None else self._last_id + 1
        self._bytes: int = total
        if count != self._last_id - self._first_id + 1:
            raise BufferCorruptError(self.path, f"{count} values do not fill ids {self._first_id}..{self._last_id}")
        self._cursors: dict[str, int] = dict(conn.execute("SELECT sink, acked_id FROM cursors"))
        stored = dict(conn.execute("SELECT name, value FROM counters"))
        self._counters = {name: int(stored.get(name, 0)) for name in _COUNTERS}
        if self._counters["dropped_in_flight"]:
            # The process that held them in memory is gone: they were never delivered.
            self._counters["dropped_oldest"] += self._counters["dropped_in_flight"]
            self._counters["dropped_in_flight"] = 0
            self._state_dirty = not self.read_only  # written by the next transaction
        self._in_flight: list[tuple[int, int]] = []  # id ranges of those readings, oldest first
        self._taken_to: dict[str, int] = {}  # per sink: highest id take() handed out since reading from the cursor
        self._tail = Tail(self.tail_max, self._last_id + 1, max_items=min(self.tail_max, _TAIL_MAX_ITEMS))
        if not self.read_only and conn.execute("SELECT count(*) FROM series").fetchone()[0] > 1000:
            # Series no reading or dead letter refers to any more (at open: nothing is cached yet).
            conn.execute(
                "DELETE FROM series WHERE id NOT IN (SELECT series FROM readings)"
                " AND id NOT IN (SELECT series FROM dead_letters)"
            )
        if not self.read_only and conn.execute("SELECT count(*) FROM layouts").fetchone()[0] > 1000:
            conn.execute(
                f"DELETE FROM layouts WHERE id NOT IN"
                f" (SELECT kind >> {FRAME_SHIFT} FROM readings WHERE kind >= {FRAME_KIND_MIN})"
            )
        log.debug(
            "buffer %s: %d readings, ids %d..%d, sinks %s",
            self.path,
            count,
            self._first_id,
            self._last_id,
            sorted(self._cursors),
        )

    # -- transactions ----------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable=False`` skips the fsync under sync=full:
        used for acks, whose loss only means a batch is sent again."""
        if self.read_only:
            raise DurableBufferError(self.path, "opened read-only: no writes")
        conn = self._conn
        relaxed = not durable and self.sync == "full"
        if relaxed:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._state_dirty:  # left in memory by an earlier write that met a full disk
                    self._write_counters(conn, self._counters)
                    conn.executemany(
                        "INSERT OR REPLACE INTO cursors (sink, acked_id) VALUES (?, ?)", self._cursors.items()
                    )
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._series.rolled_back()
                self._layouts.rolled_back()
                raise
            self._series.committed()
            self._layouts.committed()
            self._state_dirty = False
        finally:
            if relaxed:
                conn.execute("PRAGMA synchronous=FULL")

    @staticmethod
    def _write_counters(conn: sqlite3.Connection, counters: dict[str, int]) -> None:
        conn.executemany("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", counters.items())

    def _cursor(self, sink: str) -> int:
        try:
            return self._cursors[sink]
        except KeyError:
            raise UnknownSinkError(self.path, f"unknown sink {sink!r} (known: {sorted(self._cursors)})") from None

    def _delete_through(self, conn: sqlite3.Connection, last: int) -> Deleted:
        """Delete the rows whose values all have ids <= last (whole rows only)."""
        size, end = conn.execute(
            "SELECT coalesce(sum(size), 0), max(id) FROM readings WHERE id <= ?", (last,)
        ).fetchone()
        if end is None:
            return _NOTHING
        conn.execute("DELETE FROM readings WHERE id <= ?", (end,))
        return Deleted(end - self._first_id + 1, size, end)  # rows cover first_id..end contiguously

    def _acked_by_all(self, through: int) -> int:
        """How many buffered values up to ``through`` every sink has acked: the front
        of a frame whose row stays until its last value is acked. Deleting them
        drops nothing."""
        if not self._cursors:
            return 0
        return max(0, min(min(self._cursors.values()), through) - self._first_id + 1)

    def _collectable(self, cursors: dict[str, int]) -> int | None:
        """Highest id every sink has acked, if any buffered row is at or below it."""
        if not cursors:
            return None  # nobody has read anything yet: keep it all for the first sink
        floor = min(cursors.values())
        return floor if floor >= self._first_id else None

    # -- sinks -----------------------------------------------------------

    def set_sinks(self, names: Sequence[str]) -> list[str]:
        """Create cursors for new sinks (they get the backlog), drop those of absent ones."""
        wanted = list(dict.fromkeys(names))
        removed = [name for name in self._cursors if name not in wanted]
        added = [name for name in wanted if name not in self._cursors]
        start = self._first_id - 1
        cursors = {name: self._cursors.get(name, start) for name in wanted}
        collect = self._collectable(cursors)
        deleted = _NOTHING
        # The dispatchers are started anew with the new set of sinks: what they held is gone.
        counters = self._settle_in_flight(None, None)
        try:
            with self._transaction() as conn:
                self._write_counters(conn, counters)
                conn.executemany("DELETE FROM cursors WHERE sink = ?", [(name,) for name in removed])
                conn.executemany(
                    "INSERT OR REPLACE INTO cursors (sink, acked_id) VALUES (?, ?)", [(n, start) for n in added]
                )
                if collect is not None:
                    deleted = self._delete_through(conn, collect)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise DurableBufferError(self.path, f"set_sinks failed: {exc}") from exc
            # Start anyway (draining to the sinks frees space): the new cursors are written
            # with the next transaction that commits; a removed one may come back after a
            # crash before that, and is removed again at the next start.
            self._disk.full(self._bytes, self.overflow)
            self._disk.free(self._conn)
            self._state_dirty = True
            deleted = _NOTHING
        self._cursors = cursors
        self._counters = counters
        self._in_flight = []
        self._taken_to = {}
        self._forget(deleted)
        if removed or added:
            log.info("buffer sinks: added %s, removed %s", added, removed)
        return sorted(removed)

    def _forget(self, deleted: Deleted) -> None:
        if deleted.end is not None:
            self._first_id = deleted.end + 1
            self._bytes -= deleted.bytes
            self._tail.forget_through(deleted.end)

    def _remember(self, first_id: int, items: list[Item], lengths: list[int]) -> None:
        """Add just-committed items (value ids first_id .. ``_last_id``) to the tail cache."""
        if not self._tail.add(first_id, items, lengths):
            # Not contiguous: a bug. Serve everything from SQLite rather than risk a wrong answer.
            log.error("buffer %s: in-memory tail out of step; reading from the file instead", self.path)

    # -- append ----------------------------------------------------------

    def append(self, items: Sequence[Item]) -> AppendResult:
        """Store a batch in one transaction, applying the overflow policy. Counts are in values."""
        if not items:
            return AppendResult(0, 0, 0)
        budget = self._disk.budget(self.max_bytes, self._bytes)
        first_try = True
        try:
            result = self._append(items, budget)
        except sqlite3.Error as exc:
            first_try = False
            if not is_disk_full(exc):
                raise DurableBufferError(self.path, f"append failed: {exc}") from exc
            cap = self._disk.full(self._bytes, self.overflow)
            self._disk.free(self._conn)
            try:
                result = self._append(items, cap)
            except sqlite3.Error as again:
                if not is_disk_full(again):
                    raise DurableBufferError(self.path, f"append failed: {again}") from again
                # Nothing could be freed to make room: the batch is what is lost.
                lost = count_values(items)
                self._disk.events += 1
                self._counters["dropped_newest"] += lost
                self._state_dirty = True  # persisted by the next transaction that commits
                self._note_overflow(lost)
                return AppendResult(0, lost, 0)
        self._disk.committed(self._bytes, self.max_bytes, first_try=first_try)
        return result

    def _frame_row(self, frame: Frame) -> tuple[Row, Frame]:
        """The row of a frame (its id still 0) and the frame as take() will return it."""
        series = self._series
        tags = frame.tags
        key = (frame.site, frame.gateway, frame.device, "", "", series.tags_text(tags) if tags else "")
        sid, size = series.by_key.get(key) or series.lookup(key)
        layout, layout_size = self._layouts.lookup(frame.fields)
        payload, payload_format, values_size, values = encode_frame_values(frame.values)
        if values is not frame.values:  # floats become an array('d'), subclasses (IntEnum...) their base type:
            frame = make_frame(  # the tail must return what the file does
                frame.ts_ns, frame.site, frame.gateway, frame.device, frame.fields, values, frame.tags, frame.qualities
            )
        size += ROW_OVERHEAD + layout_size + values_size
        quality = encode_qualities(frame.qualities)
        return (0, sid, frame.ts_ns, payload, frame_kind(layout, payload_format), quality, size), frame

    def _append(self, items: Sequence[Item], budget: int) -> AppendResult:
        series = self._series
        by_key = series.by_key
        rows: list[Row] = []
        lengths: list[int] = []  # values per row
        cached: list[Item] = []  # the items as take() would return them
        with self._transaction() as conn:
            for item in items:
                if isinstance(item, Frame):
                    if not item.values:
                        continue  # holds no value: nothing to store or count
                    row, frame = self._frame_row(item)
                    rows.append(row)
                    lengths.append(len(frame.values))
                    cached.append(frame)
                    continue
                r = item
                tags = r.tags
                key = (r.site, r.gateway, r.device, r.quantity, r.unit, series.tags_text(tags) if tags else "")
                sid, size = by_key.get(key) or series.lookup(key)
                value = r.value
                kind = type(value)
                # Inline fast path for the common finite float / int64 case.
                if (kind is float and value == value) or (kind is int and -_INT_MAX - 1 <= value <= _INT_MAX):  # type: ignore[operator]
                    code = 0
                    size += ROW_OVERHEAD + 8
                else:
                    value, code, value_size = encode_value(value)  # type: ignore[assignment]
                    size += ROW_OVERHEAD + value_size
                    decoded = decode_value(value, code)
                    if type(decoded) is not type(r.value):  # e.g. an IntEnum comes back as an int
                        r = r.with_changes(value=decoded)
                rows.append((0, sid, r.ts_ns, value, code, int(r.quality), size))
                lengths.append(1)
                cached.append(r)
            dropped_newest = dropped_oldest = 0
            sizes = [row[6] for row in rows]
            incoming = sum(sizes)
            deleted = _NOTHING
            in_flight: tuple[int, int] | None = None
            if self._bytes + incoming > budget:
                if self.overflow == "drop_newest":
                    room, keep = budget - self._bytes, 0
                    while keep < len(sizes) and sizes[keep] <= room:
                        room -= sizes[keep]
                        keep += 1
                    dropped_newest = sum(lengths[keep:])
                    del rows[keep:], cached[keep:], lengths[keep:]
                else:
                    skip = 0
                    while incoming > budget:  # the batch alone does not fit: lose its oldest items too
                        incoming -= sizes[skip]
                        skip += 1
                    dropped_oldest = sum(lengths[:skip])
                    del rows[:skip], cached[:skip], lengths[:skip]
                    through = self._oldest_to_free(conn, self._bytes + incoming - budget)
                    if through is not None:
                        deleted = self._delete_through(conn, through)
                        in_flight = self._in_flight_through(through)
                        dropped_oldest += (
                            deleted.values
                            - self._acked_by_all(through)
                            - (in_flight[1] - in_flight[0] + 1 if in_flight else 0)
                        )
            counters = self._counters
            if dropped_newest or dropped_oldest or in_flight:
                counters = {**counters}
                counters["dropped_newest"] += dropped_newest
                counters["dropped_oldest"] += dropped_oldest
                if in_flight:
                    counters["dropped_in_flight"] += in_flight[1] - in_flight[0] + 1
                self._write_counters(conn, counters)
            # Ids are per value: a row's id is its last value's.
            first_new = end = self._last_id
            for i, n in enumerate(lengths):
                end += n
                rows[i] = (end, *rows[i][1:])
            insert_rows(conn, _INSERT_HEAD, rows)
        # Committed: now the in-memory state may follow. An empty buffer has
        # first_id == last_id + 1, which is the first new id: no special case.
        self._counters = counters
        if in_flight:
            self._in_flight.append(in_flight)
        self._forget(deleted)
        self._bytes += sum(row[6] for row in rows)
        self._last_id = end
        if cached:
            self._remember(first_new + 1, cached, lengths)
        self._note_overflow(dropped_newest + dropped_oldest)
        return AppendResult(end - first_new, dropped_newest, dropped_oldest)

    def _oldest_to_free(self, conn: sqlite3.Connection, need: int) -> int | None:
        """The id through which the oldest rows add up to ``need`` bytes (None if need <= 0)."""
        if need <= 0:
            return None
        freed, through = 0, None
        cur = conn.execute("SELECT id, size FROM readings ORDER BY id")
        try:
            while freed < need:
                chunk = cur.fetchmany(1024)
                if not chunk:
                    break
                for row_id, size in chunk:
                    freed += size
                    through = row_id
                    if freed >= need:
                        break
        finally:
            cur.close()
        return through

    def _in_flight_through(self, through: int) -> tuple[int, int] | None:
        """The ids among those drop_oldest deletes now (first_id..through) that the
        only sink's dispatcher has taken but not acked: it may still deliver them.

        With several sinks a deleted reading counts as dropped at once (one sink
        at least misses it), even if one of them then delivers it from memory.
        """
        if len(self._cursors) != 1:
            return None
        ((sink, cursor),) = self._cursors.items()
        lo, hi = max(cursor + 1, self._first_id), min(self._taken_to.get(sink, cursor), through)
        return (lo, hi) if lo <= hi else None

    def _settle_in_flight(self, first: int | None, target: int | None) -> dict[str, int]:
        """Counters once the in-flight readings up to ``target`` are settled: those in
        [first, target] were delivered from memory, those before ``first`` were not
        (the dispatcher dropped its batch and read on from the buffer) and are counted
        as dropped. ``target`` None settles them all as dropped."""
        if not self._in_flight:
            return self._counters
        lost = settled = 0
        for lo, hi in self._in_flight:
            if target is not None and lo > target:
                break
            end = hi if target is None else min(hi, target)
            settled += end - lo + 1
            if target is None:
                lost += end - lo + 1
            elif first is not None:
                lost += max(0, min(end, first - 1) - lo + 1)
        return {
            **self._counters,
            "dropped_oldest": self._counters["dropped_oldest"] + lost,
            "dropped_in_flight": self._counters["dropped_in_flight"] - settled,
        }

    def _forget_in_flight(self, target: int) -> None:
        kept = []
        for lo, hi in self._in_flight:
            if hi > target:
                kept.append((max(lo, target + 1), hi))
        self._in_flight = kept

    def _note_overflow(self, dropped: int) -> None:
        if dropped and not self._overflowing:
            self._overflowing = True
            log.warning(
                "buffer %s is full (%d of %d bytes): %s; dropping readings (counted in stats)",
                self.path,
                self._bytes,
                self.max_bytes,
                self.overflow,
            )

    # -- take / ack ------------------------------------------------------

    def _start(self, sink: str, after_id: int | None) -> int:
        start = self._cursor(sink)
        if after_id is not None and after_id > start:
            return after_id
        self._taken_to[sink] = start  # read from the cursor: whatever the caller held is dropped
        return start

    def take(self, sink: str, limit: int, after_id: int | None = None) -> list[BufferedReading]:
        """Up to ``limit`` unacked values of ``sink`` in id order, after max(cursor, after_id), one
        BufferedReading each (frames are expanded)."""
        start = self._start(sink, after_id)
        if limit <= 0 or start >= self._last_id:
            return []
        if self._tail.covers(start):
            out = readings_from(self._tail.after(start), start, limit)
        else:
            with contextlib.closing(self._rows_after(start, limit)) as rows:
                out = readings_from(rows, start, limit)
        if out:
            self._taken_to[sink] = max(self._taken_to.get(sink, start), out[-1].id)
        return out

    def take_frames(self, sink: str, limit: int, after_id: int | None = None) -> list[BufferedFrame]:
        """The unacked values of ``sink`` after max(cursor, after_id) as frames, in id order: whole
        stored frames (the first one cut at the cursor if it sits inside it) up to ``limit``
        values, but always at least one; consecutive readings of one device, timestamp and
        tag set are grouped into one frame."""
        start = self._start(sink, after_id)
        if limit <= 0 or start >= self._last_id:
            return []
        if self._tail.covers(start):
            out = frames_from(self._tail.after(start), start, limit)
        else:
            with contextlib.closing(self._rows_after(start, limit)) as rows:
                out = frames_from(rows, start, limit)
        if out:
            self._taken_to[sink] = max(self._taken_to.get(sink, start), out[-1].last_id)
        return out

    def _rows_after(self, start: int, rows: int) -> Generator[StoredItem, None, None]:
        """Up to ``rows`` stored items from the one holding value ``start + 1``, decoded lazily
        (the caller stops reading once it has enough values)."""
        series, layouts = self._series.fields, self._layouts.fields
        cur = self._conn.execute(_SELECT, (start, rows))
        try:
            for row_id, sid, ts_ns, value, kind, quality in cur:
                site, gateway, device, quantity, unit, tags = series(sid)
                if kind < FRAME_KIND_MIN:
                    if kind:
                        value = decode_value(value, kind)
                    yield (
                        row_id,
                        make_reading(ts_ns, site, gateway, device, quantity, value, unit, tags, quality_of(quality)),
                    )
                else:
                    fields = layouts(frame_layout(kind))
                    values = decode_frame_values(value, kind)
                    frame = Frame(ts_ns, site, gateway, device, fields, values, tags, decode_qualities(quality))
                    yield row_id - len(values) + 1, frame
        finally:
            cur.close()

    def ack(self, sink: str, up_to_id: int, first_id: int | None = None) -> int:
        """Advance the sink's cursor (never backwards); delete what every sink has acked.

        ``first_id`` is the first id of the delivered batch (default: the one after
        the cursor, i.e. everything up to ``up_to_id`` was delivered). Returns how
        many readings this settles as dropped: drop_oldest deleted them while the
        sink's dispatcher held them, and it did not deliver them (ids before ``first_id``).
        """
        current = self._cursor(sink)
        target = min(up_to_id, self._last_id)  # never ack ids not yet assigned
        if target <= current:
            return 0
        cursors = {**self._cursors, sink: target}
        collect = self._collectable(cursors)
        deleted = _NOTHING
        counters = self._settle_in_flight(current + 1 if first_id is None else first_id, target)
        lost = counters["dropped_oldest"] - self._counters["dropped_oldest"]
        try:
            # Settled counters are fsynced: a lost update would count delivered readings as dropped.
            with self._transaction(durable=counters is not self._counters) as conn:
                if counters is not self._counters:
                    self._write_counters(conn, counters)
                conn.execute("UPDATE cursors SET acked_id = ? WHERE sink = ?", (target, sink))
                if collect is not None:
                    deleted = self._delete_through(conn, collect)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise DurableBufferError(self.path, f"ack failed: {exc}") from exc
            # The cursor moves in memory and is written with the next ack that
            # commits; a crash before that only resends (at-least-once).
            self._disk.full(self._bytes, self.overflow)
            self._disk.free(self._conn)
            self._cursors[sink] = target
            self._counters = counters
            self._forget_in_flight(target)
            self._state_dirty = True
            if collect is not None:
                self._collect_in_steps(collect)
            return lost
        self._cursors = cursors
        self._counters = counters
        self._forget_in_flight(target)
        self._forget(deleted)
        if self._overflowing and self._bytes < self.max_bytes * _OVERFLOW_CLEAR:
            self._overflowing = False
            log.warning("buffer %s: below its size limit again (%d bytes)", self.path, self._bytes)
        return lost

    def _collect_in_steps(self, through: int) -> None:
        """Delete acked rows a few at a time, folding the WAL in between, on a full disk.

        Deleting a large backlog at once needs WAL room for every page it
        touches, which a full disk does not have: the delete failed, nothing
        was freed, and the buffer could never drain. Small steps need little
        WAL each, and the pages they free are reused by the next appends.
        """
        while self._first_id <= through:
            step = self._collect_step(through)
            if step is None:
                return  # only a partly acked frame is left below ``through``
            try:
                with self._transaction(durable=False) as conn:  # also writes the cursors held in memory
                    deleted = self._delete_through(conn, step)
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise DurableBufferError(self.path, f"ack failed: {exc}") from exc
                return  # the next ack tries again
            self._forget(deleted)
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _collect_step(self, through: int) -> int | None:
        """The last value id of the next step of whole rows to delete (at least one row)."""
        step, total = None, 0
        rows = self._conn.execute(
            "SELECT id, size FROM readings WHERE id <= ? ORDER BY id LIMIT ?", (through, _COLLECT_STEP)
        )
        for row_id, size in rows:
            if step is not None and total + size > _COLLECT_STEP_BYTES:
                break
            step, total = row_id, total + size
        rows.close()
        return step

    # -- dead letters ----------------------------------------------------

    def dead_letter(self, sink: str, items: Sequence[BufferedReading], reason: str) -> None:
        """Copy readings a sink rejected for good into the dead-letter table.

        The table keeps the newest ``max_dead_letters`` entries (all sinks
        together); older ones are deleted, ``dead_letters_total`` counts all.
        The caller acks the items afterwards. Raises BufferFullError if the disk
        is full (nothing is written; the caller should not ack then).
        """
        if not items:
            return
        counters = {**self._counters, "dead_letters": self._counters["dead_letters"] + len(items)}
        try:
            with self._transaction() as conn:
                deadletters.insert(conn, self._series, sink, items, reason, time.time_ns(), self.max_dead_letters)
                self._write_counters(conn, counters)
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                self._disk.full(self._bytes, self.overflow)
                raise BufferFullError(self.path, f"disk full: {len(items)} dead letters not stored") from exc
            raise DurableBufferError(self.path, f"dead_letter failed: {exc}") from exc
        self._counters = counters

    def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first, of one sink or of all."""
        return deadletters.select(self._conn, self._series, sink, limit)

    # -- rejected messages -----------------------------------------------

    def reject(self, items: Sequence[RejectedMessage]) -> None:
        """Keep messages drivers refused for good (raw bytes and reason), newest ``max_rejected``.

        Durable when it returns, so the driver may acknowledge the message to its
        source. Raises BufferFullError if the disk is full (nothing written; the
        driver must not acknowledge then).
        """
        if not items:
            return
        counters = {**self._counters, "rejected": self._counters["rejected"] + len(items)}
        try:
            with self._transaction() as conn:
                rejected.insert(conn, items, self.max_rejected)
                self._write_counters(conn, counters)
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                self._disk.full(self._bytes, self.overflow)
                raise BufferFullError(self.path, f"disk full: {len(items)} rejected messages not stored") from exc
            raise DurableBufferError(self.path, f"reject failed: {exc}") from exc
        self._counters = counters

    def rejected(self, source: str | None = None, limit: int = 100) -> list[RejectedMessage]:
        """The newest rejected messages first, of one source or of all."""
        return rejected.select(self._conn, source, limit)

    # -- stats / close ---------------------------------------------------

    def _ts_of(self, row_id: int) -> int | None:
        # The row holding value ``row_id``: the first whose last value id is >= it.
        row = self._conn.execute("SELECT ts_ns FROM readings WHERE id >= ? ORDER BY id LIMIT 1", (row_id,)).fetchone()
        return row[0] if row else None

    def stats(self) -> BufferStats:
        if self.read_only:
            self._recover()  # someone else writes: re-read instead of trusting the state at open
        first, last = self._first_id, self._last_id
        dead = deadletters.count_by_sink(self._conn)
        sinks = {}
        for name, acked in self._cursors.items():
            next_id = max(acked + 1, first)
            pending = max(last - next_id + 1, 0)
            sinks[name] = SinkStats(name, acked, pending, self._ts_of(next_id) if pending else None, dead.get(name, 0))
        file_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                file_bytes += os.stat(f"{self.path}{suffix}").st_size
        return BufferStats(
            readings=last - first + 1,
            bytes=self._bytes,
            file_bytes=file_bytes,
            oldest_ts_ns=self._ts_of(first) if last >= first else None,
            dropped_oldest_total=self._counters["dropped_oldest"],
            dropped_newest_total=self._counters["dropped_newest"],
            dead_letters_total=self._counters["dead_letters"],
            sinks=sinks,
            disk_full_events=self._disk.events,
            rejected_total=self._counters["rejected"],
        )

    def close(self) -> None:
        """Write pending counters, checkpoint (SQLite does on the last close) and unlock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._state_dirty:
                with contextlib.suppress(sqlite3.Error), self._transaction():
                    pass
            self._conn.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)

    def __enter__(self) -> DurableBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
