"""Values and errors of the durable buffer's API (re-exported by ``gateway.buffer``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gateway.frame import Frame
from gateway.model import Reading


class BufferedReading(NamedTuple):
    """A reading as stored: ``id`` grows with every append and is never reused.

    A NamedTuple, not a frozen dataclass like the rest: one is built per reading
    taken from the buffer, and a tuple costs 0.2 us against 1 us.
    """

    id: int
    reading: Reading


class BufferedFrame(NamedTuple):
    """A frame as stored: its values have the consecutive ids ``id`` .. ``last_id``."""

    id: int
    frame: Frame

    @property
    def last_id(self) -> int:
        return self.id + len(self.frame.values) - 1

    def readings(self) -> list[BufferedReading]:
        return list(map(BufferedReading, range(self.id, self.id + len(self.frame.values)), self.frame.readings()))


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one ``append`` did. ``accepted + dropped_newest`` is the batch length;
    ``dropped_oldest`` counts readings the drop_oldest policy removed, from the
    buffer or from the front of this batch."""

    accepted: int
    dropped_newest: int
    dropped_oldest: int


@dataclass(frozen=True, slots=True)
class SinkStats:
    name: str
    acked_id: int
    pending: int
    oldest_pending_ts_ns: int | None  # ts_ns of the first pending reading in buffer order
    dead_letters: int  # readings of this sink now in the dead-letter table


@dataclass(frozen=True, slots=True)
class BufferStats:
    readings: int
    bytes: int  # logical size, the figure bounded by max_bytes
    file_bytes: int  # database + WAL on disk
    oldest_ts_ns: int | None  # ts_ns of the first reading in buffer order
    dropped_oldest_total: int  # ever (persisted)
    dropped_newest_total: int  # ever (persisted)
    dead_letters_total: int  # readings ever dead-lettered (persisted)
    sinks: dict[str, SinkStats]
    disk_full_events: int = 0  # SQLITE_FULL errors met by this process
    rejected_total: int = 0  # messages drivers ever rejected (persisted); the newest are kept


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int  # the reading's buffer id
    sink: str
    reading: Reading
    reason: str
    dead_at_ns: int


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """A message a driver refused for good (undecodable), kept so that someone can look at it.

    The driver then acknowledges it to its source: a poison message must not be
    redelivered forever nor block the good ones queued behind it.
    """

    source: str
    driver: str
    device: str  # "" when the message did not say
    raw: bytes  # as received; the buffer keeps the first MAX_REJECTED_RAW bytes
    size: int  # length as received
    reason: str  # "<kind>: <detail>"
    rejected_at_ns: int


class DurableBufferError(Exception):
    """Base of the buffer's errors; ``path`` is the database file."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class BufferLockedError(DurableBufferError):
    """Another process (or another DurableBuffer in this one) has the buffer open."""


class BufferCorruptError(DurableBufferError):
    """The file is not a usable buffer database."""


class BufferFullError(DurableBufferError):
    """The disk is full and the operation could not be completed (nothing was changed)."""


class UnknownSinkError(DurableBufferError, KeyError):
    """The sink has no cursor: it is not in the last ``set_sinks`` list."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
