"""A series' points from the local store (gateway/sinks/local.py), thinned for a plot.

Runs on a worker thread (SQLite is blocking). The store's series are device and
quantity (and tags): a device name is unique on a gateway, so the source is
not needed to find them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.sinks.local import LocalStore

MAX_ROWS = 200_000  # a day of a 1 Hz series twice over; bounds the memory of one request


def store_points(
    path: Path, device: str, quantity: str, from_ns: int, to_ns: int, max_points: int
) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    try:
        store = LocalStore(path, readonly=True)
    except sqlite3.Error:
        return []
    try:
        rows = store.query(device=device, quantity=quantity, since_ns=from_ns, limit=MAX_ROWS)
    finally:
        store.close()
    points = [
        (p.reading.ts_ns, float(p.reading.value))
        for p in rows
        if p.reading.ts_ns <= to_ns and isinstance(p.reading.value, int | float)
    ]
    return thin(points, from_ns, to_ns, max_points)


def thin(points: list[tuple[int, float]], from_ns: int, to_ns: int, max_points: int) -> list[tuple[int, float]]:
    """At most ``max_points``: the mean of each of ``max_points`` equal time buckets, stamped at its first point."""
    if len(points) <= max_points:
        return points
    width = max(1, (to_ns - from_ns) // max_points + 1)
    out: list[tuple[int, float]] = []
    bucket, first_ts, total, n = -1, 0, 0.0, 0
    for ts, v in points:
        b = (ts - from_ns) // width
        if b != bucket and n:
            out.append((first_ts, total / n))
            total, n = 0.0, 0
        if n == 0:
            bucket, first_ts = b, ts
        total += v
        n += 1
    if n:
        out.append((first_ts, total / n))
    return out
