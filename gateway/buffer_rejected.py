"""The rejected table: whole messages drivers could not decode, kept for inspection.

Unlike dead letters (readings a sink refused), these never became readings: the
raw bytes and the reason are all there is. Bounded by count, newest kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from gateway.buffer_types import RejectedMessage

MAX_REJECTED_RAW: Final = 8192  # bytes of a message kept: enough to see what it was

_INSERT: Final = (
    "INSERT INTO rejected (source, driver, device, raw, size, reason, rejected_at_ns) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT: Final = "SELECT source, driver, device, raw, size, reason, rejected_at_ns FROM rejected"


def insert(conn: sqlite3.Connection, items: Sequence[RejectedMessage], keep: int) -> None:
    """Add items (inside a write transaction), then trim the table to its newest ``keep`` rows."""
    conn.executemany(
        _INSERT,
        [(m.source, m.driver, m.device, m.raw[:MAX_REJECTED_RAW], m.size, m.reason, m.rejected_at_ns) for m in items],
    )
    conn.execute("DELETE FROM rejected WHERE seq <= (SELECT max(seq) FROM rejected) - ?", (keep,))


def select(conn: sqlite3.Connection, source: str | None, limit: int) -> list[RejectedMessage]:
    """The newest rejected messages first, of one source or of all."""
    query, args = (_SELECT, (limit,)) if source is None else (_SELECT + " WHERE source = ?", (source, limit))
    try:
        rows = conn.execute(query + " ORDER BY seq DESC LIMIT ?", args).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a read-only look at a buffer an older gateway wrote
            return []
        raise
    return [
        RejectedMessage(source, driver, device, bytes(raw), size, reason, at_ns)
        for source, driver, device, raw, size, reason, at_ns in rows
    ]
