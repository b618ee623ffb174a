"""The durable buffer: readings on local disk in SQLite (WAL), one cursor per sink.

See docs/durability.md for what survives a crash or a power cut. Invariants the
code relies on (and tests/test_buffer_model.py checks):

* ids are assigned by AUTOINCREMENT in one writer, so the rows in ``readings``
  are always the contiguous id range [first_id, last_id]; rows only ever leave
  from the old end (all sinks acked, or drop_oldest). Counts are arithmetic.
* in-memory state (bytes, ids, cursors, counters) changes only after COMMIT.
* the tail cache holds exactly the committed readings with ids
  [tail_first, last_id] (or nothing), each equal to what SQLite would return.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Literal

from gateway import buffer_deadletters as deadletters
from gateway import buffer_rejected as rejected
from gateway.buffer_codec import ROW_OVERHEAD, SqlValue, decode_value, encode_value, quality_of
from gateway.buffer_disk import DiskGuard, is_disk_full
from gateway.buffer_schema import connect, connect_read_only
from gateway.buffer_series import SeriesTable
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
from gateway.frame import Frame, FrameFields, Item, as_readings
from gateway.model import Quality, Reading, make_reading
from gateway.sqlite_rows import insert_rows

log = logging.getLogger("gateway.buffer")

Overflow = Literal["drop_oldest", "drop_newest"]
Sync = Literal["full", "normal"]

_INSERT_HEAD: Final = "INSERT INTO readings (series, ts_ns, value, kind, quality, size)"
_SELECT: Final = "SELECT id, series, ts_ns, value, kind, quality FROM readings WHERE id > ? ORDER BY id LIMIT ?"
# dropped_in_flight: readings drop_oldest deleted while the only sink's dispatcher
# held them in memory; counted as dropped only if they are never acknowledged
# (see ``_settle_in_flight``), all of them at the next open after a crash.
_COUNTERS: Final = ("dropped_oldest", "dropped_newest", "dead_letters", "dropped_in_flight", "rejected")

_OVERFLOW_CLEAR: Final = 0.9  # overflow "recovers" once below 90 % of the budget
# The newest readings are also kept in memory (the "tail"), so that a sink
# keeping up is served without a SELECT and without rebuilding each Reading:
# that was 4.4 of the ~25 us a reading cost on the way to the local sink.
# Two dispatcher batches (take + prefetch) of the default size fit.
_TAIL_MAX: Final = 10_000
_INT_MAX: Final = 2**63 - 1
_COLLECT_STEP: Final = 500  # rows deleted per transaction when the disk is full (a few pages of WAL)


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
        count, total, first = conn.execute("SELECT count(*), coalesce(sum(size), 0), min(id) FROM readings").fetchone()
        self._last_id: int = seq[0] if seq else 0
        self._first_id: int = first if first is not None else self._last_id + 1
        self._bytes: int = total
        if count != self._last_id - self._first_id + 1:
            raise BufferCorruptError(self.path, f"{count} rows do not fill ids {self._first_id}..{self._last_id}")
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
        self._tail: list[Reading] = []
        self._tail_first = self._last_id + 1
        if not self.read_only and conn.execute("SELECT count(*) FROM series").fetchone()[0] > 1000:
            # Series no reading or dead letter refers to any more (at open: nothing is cached yet).
            conn.execute(
                "DELETE FROM series WHERE id NOT IN (SELECT series FROM readings)"
                " AND id NOT IN (SELECT series FROM dead_letters)"
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
                raise
            self._series.committed()
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

    def _delete_through(self, conn: sqlite3.Connection, last: int) -> tuple[int, int]:
        """Delete rows with id <= last; return (rows, bytes) deleted."""
        rows, size = conn.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM readings WHERE id <= ?", (last,)
        ).fetchone()
        conn.execute("DELETE FROM readings WHERE id <= ?", (last,))
        return rows, size

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
        deleted = (0, 0)
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
            collect, deleted = None, (0, 0)
        self._cursors = cursors
        self._counters = counters
        self._in_flight = []
        self._taken_to = {}
        self._forget(collect, deleted)
        if removed or added:
            log.info("buffer sinks: added %s, removed %s", added, removed)
        return sorted(removed)

    def _forget(self, through: int | None, deleted: tuple[int, int]) -> None:
        if through is not None:
            self._first_id = through + 1
            self._bytes -= deleted[1]
            if through >= self._tail_first:
                del self._tail[: through - self._tail_first + 1]
                self._tail_first = through + 1

    def _remember(self, readings: list[Reading]) -> None:
        """Add just-committed readings (ids up to ``_last_id``) to the tail cache."""
        if self._tail_first + len(self._tail) != self._last_id - len(readings) + 1:
            # Not contiguous: a bug. Serve everything from SQLite rather than risk a wrong answer.
            log.error("buffer %s: in-memory tail out of step; reading from the file instead", self.path)
            self._tail = []
            self._tail_first = self._last_id + 1
            return
        self._tail.extend(readings)
        excess = len(self._tail) - self.tail_max
        if excess > 0:
            del self._tail[:excess]
            self._tail_first += excess

    # -- append ----------------------------------------------------------

    def append(self, items: Sequence[Item]) -> AppendResult:
        """Store a batch in one transaction, applying the overflow policy. Counts are in values."""
        if not items:
            return AppendResult(0, 0, 0)
        # FOUNDATION: frames are stored value by value until frame rows land.
        readings: Sequence[Reading] = as_readings(items) if any(type(i) is Frame for i in items) else items  # type: ignore[assignment]
        budget = self._disk.budget(self.max_bytes, self._bytes)
        first_try = True
        try:
            result = self._append(readings, budget)
        except sqlite3.Error as exc:
            first_try = False
            if not is_disk_full(exc):
                raise DurableBufferError(self.path, f"append failed: {exc}") from exc
            cap = self._disk.full(self._bytes, self.overflow)
            self._disk.free(self._conn)
            try:
                result = self._append(readings, cap)
            except sqlite3.Error as again:
                if not is_disk_full(again):
                    raise DurableBufferError(self.path, f"append failed: {again}") from again
                # Nothing could be freed to make room: the batch is what is lost.
                self._disk.events += 1
                self._counters["dropped_newest"] += len(readings)
                self._state_dirty = True  # persisted by the next transaction that commits
                self._note_overflow(len(readings))
                return AppendResult(0, len(readings), 0)
        self._disk.committed(self._bytes, self.max_bytes, first_try=first_try)
        return result

    def _append(self, readings: Sequence[Reading], budget: int) -> AppendResult:
        series = self._series
        by_key = series.by_key
        rows: list[tuple[int, int, SqlValue, int, int, int]] = []
        sizes: list[int] = []
        cached: list[Reading] = []  # the readings as take() would return them
        with self._transaction() as conn:
            for r in readings:
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
                rows.append((sid, r.ts_ns, value, code, int(r.quality), size))
                sizes.append(size)
                cached.append(r)
            dropped_newest = dropped_oldest = 0
            incoming = sum(sizes)
            through: int | None = None
            deleted = (0, 0)
            in_flight: tuple[int, int] | None = None
            if self._bytes + incoming > budget:
                if self.overflow == "drop_newest":
                    room, keep = budget - self._bytes, 0
                    while keep < len(sizes) and sizes[keep] <= room:
                        room -= sizes[keep]
                        keep += 1
                    dropped_newest = len(rows) - keep
                    del rows[keep:]
                    del cached[keep:]
                else:
                    skip = 0
                    while incoming > budget:  # the batch alone does not fit: lose its oldest too
                        incoming -= sizes[skip]
                        skip += 1
                    dropped_oldest = skip
                    del rows[:skip]
                    del cached[:skip]
                    through = self._oldest_to_free(conn, self._bytes + incoming - budget)
                    if through is not None:
                        deleted = self._delete_through(conn, through)
                        in_flight = self._in_flight_through(through)
                        dropped_oldest += deleted[0] - (in_flight[1] - in_flight[0] + 1 if in_flight else 0)
            counters = self._counters
            if dropped_newest or dropped_oldest or in_flight:
                counters = {**counters}
                counters["dropped_newest"] += dropped_newest
                counters["dropped_oldest"] += dropped_oldest
                if in_flight:
                    counters["dropped_in_flight"] += in_flight[1] - in_flight[0] + 1
                self._write_counters(conn, counters)
            insert_rows(conn, _INSERT_HEAD, rows)
        # Committed: now the in-memory state may follow. An empty buffer has
        # first_id == last_id + 1, which is the first new id: no special case.
        self._counters = counters
        if in_flight:
            self._in_flight.append(in_flight)
        self._forget(through, deleted)
        self._bytes += sum(row[5] for row in rows)
        self._last_id += len(rows)
        if cached:
            self._remember(cached)
        self._note_overflow(dropped_newest + dropped_oldest)
        return AppendResult(len(rows), dropped_newest, dropped_oldest)

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

    def take(self, sink: str, limit: int, after_id: int | None = None) -> list[BufferedReading]:
        """Up to ``limit`` unacked readings of ``sink`` in id order, after max(cursor, after_id)."""
        start = self._cursor(sink)
        if after_id is not None and after_id > start:
            start = after_id
        else:
            self._taken_to[sink] = start  # read from the cursor: whatever the caller held is dropped
        if limit <= 0 or start >= self._last_id:
            return []
        if self._tail and start >= self._tail_first - 1:
            first = start + 1
            chunk = self._tail[first - self._tail_first : first - self._tail_first + limit]
            if chunk:
                self._taken_to[sink] = max(self._taken_to.get(sink, start), first + len(chunk) - 1)
            return list(map(BufferedReading, range(first, first + len(chunk)), chunk))
        fields = self._series.fields
        out: list[BufferedReading] = []
        append = out.append
        for row_id, sid, ts_ns, value, kind, quality in self._conn.execute(_SELECT, (start, limit)):
            site, gateway, device, quantity, unit, tags = fields(sid)
            if kind:
                value = decode_value(value, kind)
            append(
                BufferedReading(
                    row_id, make_reading(ts_ns, site, gateway, device, quantity, value, unit, tags, quality_of(quality))
                )
            )
        if out:
            self._taken_to[sink] = max(self._taken_to.get(sink, start), out[-1].id)
        return out

    def take_frames(self, sink: str, limit: int, after_id: int | None = None) -> list[BufferedFrame]:
        """Up to ``limit`` unacked values of ``sink`` as frames, in id order (see ``take``)."""
        # FOUNDATION: regrouped from readings until frame rows land.
        out: list[BufferedFrame] = []
        run: list[BufferedReading] = []

        def flush() -> None:
            if run:
                first = run[0].reading
                quals = tuple(b.reading.quality for b in run)
                frame = Frame(
                    first.ts_ns,
                    first.site,
                    first.gateway,
                    first.device,
                    FrameFields.of([b.reading.quantity for b in run], [b.reading.unit for b in run]),
                    tuple(b.reading.value for b in run),
                    first.tags,
                    None if all(q is Quality.GOOD for q in quals) else quals,
                )
                out.append(BufferedFrame(run[0].id, frame))
                run.clear()

        for item in self.take(sink, limit, after_id):
            if run:
                head = run[0].reading
                r = item.reading
                if not (
                    item.id == run[-1].id + 1
                    and r.ts_ns == head.ts_ns
                    and r.device == head.device
                    and r.site == head.site
                    and r.gateway == head.gateway
                    and r.tags == head.tags
                ):
                    flush()
            run.append(item)
        flush()
        return out

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
        deleted = (0, 0)
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
        self._forget(collect, deleted)
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
            step = min(through, self._first_id + _COLLECT_STEP - 1)
            try:
                with self._transaction(durable=False) as conn:  # also writes the cursors held in memory
                    deleted = self._delete_through(conn, step)
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise DurableBufferError(self.path, f"ack failed: {exc}") from exc
                return  # the next ack tries again
            self._forget(step, deleted)
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
        row = self._conn.execute("SELECT ts_ns FROM readings WHERE id = ?", (row_id,)).fetchone()
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
