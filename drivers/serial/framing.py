"""Incremental framers: feed bytes as they arrive, get whole frames out.

A serial read returns whatever the UART had, so a frame may arrive in pieces or
several at once, and noise may sit between frames. Both framers keep the
unconsumed tail between calls, resynchronise after garbage by sliding one byte
at a time (so a valid frame hidden behind a false start is still found), and
drop a partial frame once the line has been quiet for ``frame_timeout`` seconds
(a truncated frame must not be glued to the start of the next one).

Errors are returned as short kinds (``bad_checksum``, ``garbage``...) for the
driver to count; nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

FrameLength = Callable[[bytes | bytearray], int | None]
"""Given a buffer starting with the sync bytes (at least ``header_len`` long),
the total frame length, or None when this is not a frame start."""

FrameCheck = Callable[[bytes], str | None]
"""Given a whole candidate frame, None when valid or an error kind."""


@dataclass(slots=True)
class FeedResult:
    frames: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BinaryFramer:
    """Frames that start with fixed sync bytes and carry their own length and checksum."""

    sync: bytes
    header_len: int
    frame_length: FrameLength
    check: FrameCheck
    frame_timeout: float = 0.5
    _buf: bytearray = field(default_factory=bytearray)
    _last_rx: float = 0.0

    def feed(self, data: bytes, now: float) -> FeedResult:
        out = FeedResult()
        self._expire(now, out)
        if data:
            self._buf += data
            self._last_rx = now
        self._scan(out)
        return out

    def expire(self, now: float) -> FeedResult:
        """Drop a partial frame if the line has been quiet too long (call when idle)."""
        out = FeedResult()
        self._expire(now, out)
        return out

    def _expire(self, now: float, out: FeedResult) -> None:
        if self._buf and now - self._last_rx > self.frame_timeout:
            out.errors.append("truncated_frame")
            self._buf.clear()

    def _scan(self, out: FeedResult) -> None:
        buf = self._buf
        pos = 0
        garbage = 0  # noise bytes skipped, not counting the body of a rejected frame
        covered = 0  # end of the last rejected candidate (its bytes are already counted)
        while True:
            start = buf.find(self.sync, pos)
            if start < 0:
                # Keep a trailing partial sync sequence; the rest is noise.
                end = len(buf) - _partial_sync_suffix(buf, self.sync)
                garbage += max(0, end - max(pos, covered))
                pos = max(pos, end)
                break
            garbage += max(0, start - max(pos, covered))
            pos = start
            if len(buf) - pos < self.header_len:
                break
            length = self.frame_length(buf[pos : pos + self.header_len])
            if length is None:  # sync bytes that happen to occur in noise
                garbage += 1 if pos >= covered else 0
                pos += 1
                continue
            if len(buf) - pos < length:
                break
            frame = bytes(buf[pos : pos + length])
            problem = self.check(frame)
            if problem is None:
                if garbage:
                    out.errors.append("garbage")
                    garbage = 0
                out.frames.append(frame)
                pos += length
                covered = pos
            else:
                # Slide one byte, not the whole frame: the real frame may start inside it.
                out.errors.append(problem)
                covered = max(covered, pos + length)
                pos += 1
        if garbage:
            out.errors.append("garbage")
        del buf[:pos]


def _partial_sync_suffix(buf: bytearray, sync: bytes) -> int:
    for n in range(min(len(sync) - 1, len(buf)), 0, -1):
        if buf.endswith(sync[:n]):
            return n
    return 0


@dataclass(slots=True)
class LineFramer:
    """Newline-terminated text lines (``\\r\\n`` or ``\\n``), with a length cap."""

    max_length: int = 512
    frame_timeout: float = 0.5
    _buf: bytearray = field(default_factory=bytearray)
    _last_rx: float = 0.0
    _overflow: bool = False

    def feed(self, data: bytes, now: float) -> FeedResult:
        out = FeedResult()
        self._expire(now, out)
        if data:
            self._last_rx = now
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            self._take(data[start:nl], out, complete=True)
            start = nl + 1
        if start < len(data):
            self._take(data[start:], out, complete=False)
        return out

    def expire(self, now: float) -> FeedResult:
        out = FeedResult()
        self._expire(now, out)
        return out

    def _expire(self, now: float, out: FeedResult) -> None:
        if (self._buf or self._overflow) and now - self._last_rx > self.frame_timeout:
            if not self._overflow:
                out.errors.append("truncated_frame")
            self._buf.clear()
            self._overflow = False

    def _take(self, piece: bytes, out: FeedResult, *, complete: bool) -> None:
        if not self._overflow:
            self._buf += piece
            if len(self._buf) > self.max_length:
                out.errors.append("line_too_long")
                self._buf.clear()
                self._overflow = True
        if complete:
            if not self._overflow:
                line = bytes(self._buf).rstrip(b"\r")
                if line.strip():
                    out.frames.append(line)
            self._buf.clear()
            self._overflow = False
