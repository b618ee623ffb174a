"""gateway.sqlite_rows.insert_rows: multi-row INSERT in chunks, same result as executemany."""

from __future__ import annotations

import sqlite3

import pytest

from gateway import sqlite_rows
from gateway.sqlite_rows import insert_rows

PER = sqlite_rows._ROWS_PER_STATEMENT


def table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER UNIQUE, v)")
    return conn


@pytest.mark.parametrize("n", [0, 1, PER - 1, PER, PER + 1, 3 * PER + 5])
def test_rows_are_inserted_in_order_across_chunk_boundaries(n: int) -> None:
    conn = table()
    rows = [(i, f"v{i}") for i in range(n)]
    insert_rows(conn, "INSERT INTO t (k, v)", rows)
    assert conn.execute("SELECT id, k, v FROM t ORDER BY id").fetchall() == [
        (i + 1, k, v) for i, (k, v) in enumerate(rows)
    ]


def test_the_tail_clause_applies_to_every_row_including_duplicates_within_a_chunk() -> None:
    conn = table()
    upsert = "ON CONFLICT (k) DO UPDATE SET v = excluded.v"
    insert_rows(conn, "INSERT INTO t (k, v)", [(1, "a"), (2, "b"), (1, "c")], upsert)
    insert_rows(conn, "INSERT INTO t (k, v)", [(2, "d")] * (PER + 2), upsert)
    assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [(1, "c"), (2, "d")]


def test_chunks_shrink_to_the_connections_variable_limit() -> None:
    conn = table()
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 7)  # 3 rows of 2 per statement at most
    insert_rows(conn, "INSERT INTO t (k, v)", [(i, i) for i in range(10)])
    assert conn.execute("SELECT count(*), sum(k) FROM t").fetchone() == (10, 45)
