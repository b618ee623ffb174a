"""The durable buffer between the normaliser and the sinks.

``DurableBuffer`` (gateway.buffer_sqlite) is synchronous and belongs to one
thread; ``AsyncBuffer`` is the asyncio face of it: every call runs on one
dedicated worker thread, where the SQLite connection lives. See
docs/durability.md for the guarantees.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from gateway.buffer_codec import item_size, logical_size
from gateway.buffer_sqlite import DurableBuffer, Overflow, Sync
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
from gateway.frame import Item

__all__ = [
    "AppendResult",
    "AsyncBuffer",
    "BufferCorruptError",
    "BufferFullError",
    "BufferLockedError",
    "BufferStats",
    "BufferedFrame",
    "BufferedReading",
    "DeadLetter",
    "DurableBuffer",
    "DurableBufferError",
    "Overflow",
    "RejectedMessage",
    "SinkStats",
    "Sync",
    "UnknownSinkError",
    "item_size",
    "logical_size",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncBuffer:
    """A DurableBuffer driven from asyncio through one worker thread.

    Calls are serialised by the single worker, in the order they were made.
    A cancelled await does not cancel the call: an append still commits.
    """

    def __init__(self, executor: ThreadPoolExecutor, buffer: DurableBuffer) -> None:
        self._executor = executor
        self._buffer = buffer

    @classmethod
    async def open(cls, path: Path, **kwargs: Any) -> AsyncBuffer:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer")
        loop = asyncio.get_running_loop()
        try:
            buffer = await loop.run_in_executor(executor, functools.partial(DurableBuffer, path, **kwargs))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, buffer)

    @property
    def path(self) -> Path:
        return self._buffer.path

    async def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def set_sinks(self, names: Sequence[str]) -> list[str]:
        return await self._call(self._buffer.set_sinks, list(names))

    async def append(self, readings: Sequence[Item]) -> AppendResult:
        return await self._call(self._buffer.append, readings)

    async def take_frames(self, sink: str, limit: int, after_id: int | None = None) -> list[BufferedFrame]:
        return await self._call(self._buffer.take_frames, sink, limit, after_id)

    async def take(self, sink: str, limit: int, after_id: int | None = None) -> list[BufferedReading]:
        return await self._call(self._buffer.take, sink, limit, after_id)

    async def ack(self, sink: str, up_to_id: int, first_id: int | None = None) -> int:
        return await self._call(self._buffer.ack, sink, up_to_id, first_id)

    async def dead_letter(self, sink: str, items: Sequence[BufferedReading], reason: str) -> None:
        await self._call(self._buffer.dead_letter, sink, items, reason)

    async def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return await self._call(self._buffer.dead_letters, sink, limit)

    async def reject(self, items: Sequence[RejectedMessage]) -> None:
        await self._call(self._buffer.reject, items)

    async def rejected(self, source: str | None = None, limit: int = 100) -> list[RejectedMessage]:
        return await self._call(self._buffer.rejected, source, limit)

    async def stats(self) -> BufferStats:
        return await self._call(self._buffer.stats)

    async def close(self) -> None:
        try:
            await self._call(self._buffer.close)
        finally:
            self._executor.shutdown(wait=False)
