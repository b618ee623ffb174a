"""The buffer's rejected table: messages drivers could not decode, kept bounded for inspection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.buffer import DurableBuffer, RejectedMessage
from gateway.buffer_rejected import MAX_REJECTED_RAW


def _msg(i: int, raw: bytes = b"{bad", source: str = "lns") -> RejectedMessage:
    return RejectedMessage(source, "lorawan", f"dev{i}", raw, len(raw), f"malformed_json: message {i}", 1_700_000 + i)


def test_rejected_messages_are_kept_newest_first_bounded_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    with DurableBuffer(path, max_rejected=3) as buf:
        buf.reject([_msg(0), _msg(1)])
        buf.reject([_msg(2), _msg(3, source="modem"), _msg(4)])
        assert [m.device for m in buf.rejected()] == ["dev4", "dev3", "dev2"]
        assert [m.device for m in buf.rejected("lns", limit=1)] == ["dev4"]
        assert buf.stats().rejected_total == 5
    with DurableBuffer(path, read_only=True) as ro:  # what `gateway buffer dead-letters` opens
        assert ro.stats().rejected_total == 5
        assert ro.rejected("modem") == [_msg(3, source="modem")]


def test_a_huge_message_is_cut_but_its_size_is_kept(tmp_path: Path) -> None:
    with DurableBuffer(tmp_path / "buffer.sqlite") as buf:
        buf.reject([_msg(0, raw=b"x" * 1_000_000)])
        (kept,) = buf.rejected()
    assert len(kept.raw) == MAX_REJECTED_RAW and kept.size == 1_000_000


def test_a_buffer_written_before_the_table_existed_lists_none(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    with DurableBuffer(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE rejected")
    with DurableBuffer(path, read_only=True) as ro:
        assert ro.rejected() == []
