"""The dead-letter table: readings a sink rejected for good, kept for inspection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.buffer_codec import decode_value, encode_value, quality_of
from gateway.buffer_series import SeriesTable
from gateway.buffer_types import BufferedReading, DeadLetter
from gateway.model import Reading

_INSERT = (
    "INSERT INTO dead_letters (reading_id, sink, series, ts_ns, value, kind, quality, reason, dead_at_ns)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = "SELECT reading_id, sink, series, ts_ns, value, kind, quality, reason, dead_at_ns FROM dead_letters"


def insert(
    conn: sqlite3.Connection,
    series: SeriesTable,
    sink: str,
    items: Sequence[BufferedReading],
    reason: str,
    now_ns: int,
    keep: int,
) -> None:
    """Add items (inside a write transaction), then trim the table to its newest ``keep`` rows."""
    rows = []
    for item in items:
        r = item.reading
        tags = series.tags_text(r.tags) if r.tags else ""
        sid, _ = series.lookup((r.site, r.gateway, r.device, r.quantity, r.unit, tags))
        value, kind, _ = encode_value(r.value)
        rows.append((item.id, sink, sid, r.ts_ns, value, kind, int(r.quality), reason, now_ns))
    conn.executemany(_INSERT, rows)
    # seq is AUTOINCREMENT, so "the newest keep rows" is a range: no sort needed.
    conn.execute("DELETE FROM dead_letters WHERE seq <= (SELECT max(seq) FROM dead_letters) - ?", (keep,))


def select(conn: sqlite3.Connection, series: SeriesTable, sink: str | None, limit: int) -> list[DeadLetter]:
    """The newest dead letters first, of one sink or of all."""
    query, args = (_SELECT, (limit,)) if sink is None else (_SELECT + " WHERE sink = ?", (sink, limit))
    out = []
    for reading_id, name, sid, ts_ns, value, kind, quality, reason, dead_at in conn.execute(
        query + " ORDER BY seq DESC LIMIT ?", args
    ):
        site, gateway, device, quantity, unit, tags = series.fields(sid)
        value = decode_value(value, kind)
        reading = Reading(ts_ns, site, gateway, device, quantity, value, unit, tags, quality_of(quality))
        out.append(DeadLetter(reading_id, name, reading, reason, dead_at))
    return out


def count_by_sink(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT sink, count(*) FROM dead_letters GROUP BY sink"))
