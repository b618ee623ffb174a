"""What the buffer does when the disk is full (SQLITE_FULL).

1. The budget is capped at what is buffered now, so the overflow policy
   makes room for new readings by deleting old ones (drop_oldest) or refuses
   new ones (drop_newest); freed pages are reused, the file stops growing.
2. A ballast file (the *reserve*) allocated at open is given back to the
   filesystem and the WAL is checkpointed. Why: in WAL mode even a DELETE needs
   new WAL frames, and the checkpoint that lets the WAL start over may need to
   grow the database file; on a disk full to the last block the buffer could
   otherwise neither make room nor write anything.
3. After ``PROBE_S`` and only if the filesystem has room again (twice the
   reserve plus a margin, so the released reserve alone does not look like
   recovery), the cap is lifted for one append; if that append grows the
   buffer past the cap, the disk has recovered: log it and take the reserve again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Final

log = logging.getLogger("gateway.buffer")

PROBE_S: Final = 30.0  # hold the reduced budget at least this long after SQLITE_FULL
RESERVE_MAX: Final = 8 * 1024 * 1024  # > one WAL autocheckpoint interval (~4 MB) plus a batch
PROBE_MARGIN: Final = 16 * 1024 * 1024  # free space beyond the reserve before growing again


def is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


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
        self.reserve = DiskReserve(Path(f"{db_path}.reserve"), min(RESERVE_MAX, max_bytes // 8))
        self.cap: int | None = None  # reduced budget while the disk is full
        self.full_at = 0.0
        self.events = 0

    def budget(self, max_bytes: int) -> int:
        if self.cap is None:
            return max_bytes
        if time.monotonic() - self.full_at >= PROBE_S and self._has_room():
            return max_bytes  # probe: let the buffer grow again
        return min(self.cap, max_bytes)

    def _has_room(self) -> bool:
        try:
            st = os.statvfs(self.db_path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize >= 2 * self.reserve.size + PROBE_MARGIN

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
        self.full_at = time.monotonic()
        return self.cap

    def free(self, conn: sqlite3.Connection) -> None:
        """Release the reserve and fold the WAL into the database (outside any transaction)."""
        if self.reserve.release():
            log.warning("buffer %s: released the %d-byte disk reserve", self.db_path, self.reserve.size)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def committed(self, buffered_bytes: int, max_bytes: int) -> None:
        if self.cap is not None and buffered_bytes > self.cap:
            log.warning("buffer %s: disk space is available again, budget back to %d bytes", self.db_path, max_bytes)
            self.cap = None
            self.reserve.ensure()
