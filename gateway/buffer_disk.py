"""What the buffer does when the disk is full (SQLITE_FULL), sized to the filesystem it is on.

1. The budget is capped at what is buffered now, so the overflow policy
   makes room for new readings by deleting old ones (drop_oldest) or refuses
   new ones (drop_newest); freed pages are reused, the file stops growing.
2. A ballast file (the *reserve*) allocated at open is given back to the
   filesystem and the WAL is checkpointed. Why: in WAL mode even a DELETE needs
   new WAL frames, and the checkpoint that lets the WAL start over may need to
   grow the database file; on a disk full to the last block the buffer could
   otherwise neither make room nor write anything.
3. While capped, the budget follows the free space: the cap, or what is
   buffered plus what the filesystem has free beyond the *headroom* (the
   reserve and the WAL's room), whichever is more. Space freed on the disk
   (a log rotated, a file deleted) or in the file (a sink drained the backlog)
   is used as soon as it is there. Once the filesystem has the headroom and a
   margin free again, the cap is lifted, the recovery logged and the reserve taken again.

Everything is scaled to the filesystem: a buffer on a 2 MiB tmpfs gets a
128 KiB reserve and WAL limit, not the 8 and 16 MiB meant for an SD card
(those could never fit, and nothing said so). At open the buffer says when
the reserve cannot be allocated or ``max_bytes`` is more than the filesystem holds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger("gateway.buffer")

PAGE: Final = 4096  # SQLite's default page size
RESERVE_MAX: Final = 8 * 1024 * 1024  # > one WAL autocheckpoint interval (~4 MB) plus a batch
MARGIN_MAX: Final = 16 * 1024 * 1024  # free space beyond the headroom before the cap is lifted
WAL_PAGES_MAX: Final = 1000  # autocheckpoint every ~4 MB of WAL: amortised, yet small
JOURNAL_LIMIT_MAX: Final = 16 * 1024 * 1024  # WAL size kept after a checkpoint (reused, spares the SD card)
# Shares of the filesystem's size, so that a small filesystem gets small figures.
RESERVE_SHARE: Final = 16
WAL_SHARE: Final = 16
MARGIN_SHARE: Final = 8


def is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


@dataclass(frozen=True, slots=True)
class DiskSizes:
    """The buffer's disk figures for a filesystem of ``fs_bytes`` (None: unknown, use the maxima)."""

    reserve: int
    wal_autocheckpoint_pages: int
    journal_size_limit: int
    margin: int

    @classmethod
    def for_filesystem(cls, fs_bytes: int | None, max_bytes: int) -> DiskSizes:
        total = fs_bytes if fs_bytes else 1 << 62
        wal_pages = max(16, min(WAL_PAGES_MAX, total // WAL_SHARE // PAGE))
        return cls(
            reserve=min(RESERVE_MAX, max_bytes // 8, total // RESERVE_SHARE),
            wal_autocheckpoint_pages=wal_pages,
            journal_size_limit=min(JOURNAL_LIMIT_MAX, wal_pages * PAGE),
            margin=min(MARGIN_MAX, total // MARGIN_SHARE),
        )


def filesystem_space(directory: Path) -> tuple[int, int] | None:
    """(size, free for us) of the filesystem holding ``directory``, in bytes."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


class DiskReserve:
    """A preallocated file next to the buffer, released when the disk fills."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def ensure(self) -> bool:
        """Allocate the reserve (real blocks, not a sparse file). False if there is no room for it."""
        if self.size <= 0:
            return False
        try:
            if self.path.exists() and self.path.stat().st_blocks * 512 >= self.size:
                return True
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.warning("buffer reserve %s: %s", self.path, exc)
            return False
        return True

    def release(self) -> bool:
        """Give the reserved space back to the filesystem; True if there was any."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class DiskGuard:
    """The buffer's disk-full state: logs once on the way in and once on the way out."""

    def __init__(self, db_path: Path, max_bytes: int) -> None:
        self.db_path = db_path
        space = filesystem_space(db_path.parent)
        self.fs_bytes = space[0] if space else None
        self.sizes = DiskSizes.for_filesystem(self.fs_bytes, max_bytes)
        self.reserve = DiskReserve(Path(f"{db_path}.reserve"), self.sizes.reserve)
        self.cap: int | None = None  # reduced budget while the disk is full
        self.events = 0
        self.reserve_missing = False  # could not be allocated: taken as soon as there is room

    @property
    def headroom(self) -> int:
        """Free space the buffer needs beyond its rows: the reserve and the WAL."""
        return self.reserve.size + self.sizes.journal_size_limit

    def start(self, max_bytes: int) -> None:
        """At open: take the reserve, and say which of the figures this filesystem cannot meet."""
        if self.fs_bytes is not None and max_bytes + self.headroom > self.fs_bytes:
            log.warning(
                "buffer %s: max_bytes (%d) is more than its filesystem holds (%d bytes): when the disk fills, "
                "the overflow policy applies within what fits (docs/durability.md, Disk full)",
                self.db_path,
                max_bytes,
                self.fs_bytes,
            )
        if not self.reserve.ensure() and self.reserve.size > 0:
            self.reserve_missing = True
            space = filesystem_space(self.db_path.parent)
            log.warning(
                "buffer %s: no room for the %d-byte disk reserve (%s bytes free): a full disk will have no "
                "slack to make room with; the buffer runs anyway and takes the reserve once there is room",
                self.db_path,
                self.reserve.size,
                space[1] if space else "unknown",
            )

    def _free(self) -> int | None:
        space = filesystem_space(self.db_path.parent)
        return space[1] if space else None

    def budget(self, max_bytes: int, buffered_bytes: int) -> int:
        if self.cap is None:
            return max_bytes
        free = self._free()
        room = 0 if free is None else max(0, free - self.headroom)
        return min(max_bytes, max(self.cap, buffered_bytes + room))

    def full(self, buffered_bytes: int, policy: str) -> int:
        """Record an SQLITE_FULL; return the capped budget."""
        self.events += 1
        if self.cap is None:
            log.warning(
                "buffer %s: disk full at %d buffered bytes; applying %s within that size",
                self.db_path,
                buffered_bytes,
                policy,
            )
        self.cap = buffered_bytes
        return self.cap

    def free(self, conn: sqlite3.Connection) -> None:
        """Release the reserve and fold the WAL into the database (outside any transaction)."""
        if self.reserve.release():
            log.warning("buffer %s: released the %d-byte disk reserve", self.db_path, self.reserve.size)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def committed(self, buffered_bytes: int, max_bytes: int, *, first_try: bool) -> None:
        """After an append committed; ``first_try``: without meeting a full disk."""
        if self.cap is None:
            if self.reserve_missing and (self._free() or 0) >= self.headroom + self.sizes.margin:
                self.reserve_missing = not self.reserve.ensure()
            return
        if buffered_bytes > self.cap:
            self.cap = buffered_bytes  # the file held this much: it can again
        free = self._free()
        if first_try and free is not None and free >= self.headroom + self.sizes.margin:
            log.warning("buffer %s: disk space is available again, budget back to %d bytes", self.db_path, max_bytes)
            self.cap = None
            self.reserve_missing = not self.reserve.ensure()
