"""Stored items (a Reading or a Frame, one buffer row each) as ``take`` and ``take_frames`` serve them,
and the in-memory tail of the newest committed items.

An item of n values occupies the value ids [start, start + n - 1]. A cursor is a
value id, so it may sit inside a frame: ``take`` then starts in the middle of
the frame's values, ``take_frames`` with the rest of the frame (``Frame.slice``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from gateway.buffer_types import BufferedFrame, BufferedReading
from gateway.frame import Frame, Item, frame_of, same_frame
from gateway.model import Reading

StoredItem = tuple[int, Item]  # (id of its first value, item)


def readings_from(items: Iterable[StoredItem], start: int, limit: int) -> list[BufferedReading]:
    """Up to ``limit`` values with ids > ``start``, one BufferedReading each; ``items`` in id order,
    the first one holding ``start + 1`` (or starting after it). Stops consuming ``items`` once full."""
    out: list[BufferedReading] = []
    if limit <= 0:
        return out
    for first, item in items:
        if type(item) is Frame:
            skip = max(start + 1 - first, 0)
            room = limit - len(out)
            readings = item.readings()[skip : skip + room]
            out.extend(map(BufferedReading, range(first + skip, first + skip + len(readings)), readings))
        elif first > start:
            out.append(BufferedReading(first, item))  # type: ignore[arg-type]
        if len(out) >= limit:
            break
    return out


def frames_from(items: Iterable[StoredItem], start: int, limit: int) -> list[BufferedFrame]:
    """Whole items with ids > ``start`` as frames, up to ``limit`` values but at least one item.

    The first item is cut at ``start`` when the cursor sits inside it. Consecutive
    readings of one device, timestamp and tag set are grouped into one frame.
    """
    out: list[BufferedFrame] = []
    run: list[tuple[int, Reading]] = []
    total = 0
    for first, item in items:
        if type(item) is Frame:
            n = len(item.values)
            skip = start + 1 - first
            if skip > 0:
                if skip >= n:
                    continue
                item = item.slice(skip, n)
                first += skip
                n -= skip
        else:
            n = 1
            if first <= start:
                continue
        if total and total + n > limit:
            break
        total += n
        if type(item) is Frame:
            if run:
                out.append(BufferedFrame(run[0][0], frame_of([r for _, r in run])))
                run = []
            out.append(BufferedFrame(first, item))
        else:
            r: Reading = item  # type: ignore[assignment]
            if run and not same_frame(run[0][1], r):
                out.append(BufferedFrame(run[0][0], frame_of([r for _, r in run])))
                run = []
            run.append((first, r))
        if total >= limit:
            break
    if run:
        out.append(BufferedFrame(run[0][0], frame_of([r for _, r in run])))
    return out


class Tail:
    """The newest committed items, kept in memory so that a sink that keeps up is
    served without a SELECT and without decoding rows again.

    Holds exactly the committed items whose values have ids [first, next_id - 1],
    whole items only, at most ``max_values`` values in at most ``max_items`` items (or nothing).
    Two bounds because a value costs ~30 bytes in a frame and ~200 as a Reading of its own.
    """

    def __init__(self, max_values: int, next_id: int, max_items: int | None = None) -> None:
        self.max_values = max_values
        self.max_items = max_values if max_items is None else max_items
        self._starts: list[int] = []
        self._items: list[Item] = []
        self.first = next_id
        self.next_id = next_id
        self.values = 0

    def reset(self, next_id: int) -> None:
        self._starts.clear()
        self._items.clear()
        self.first = self.next_id = next_id
        self.values = 0

    def add(self, first_id: int, items: list[Item], lengths: list[int]) -> bool:
        """Append just-committed items whose values start at ``first_id``; False (and
        emptied, starting after them) if they do not follow on from what is held."""
        if first_id != self.next_id:
            self.reset(first_id + sum(lengths))
            return False
        starts = self._starts
        for n in lengths:
            starts.append(first_id)
            first_id += n
        self._items.extend(items)
        self.next_id = first_id
        self.values += sum(lengths)
        if self.values > self.max_values:
            # Drop whole items from the front until the rest fits.
            self._drop_front(bisect_left(starts, self.next_id - self.max_values))
        if len(self._items) > self.max_items:
            self._drop_front(len(self._items) - self.max_items)
        return True

    def forget_through(self, through: int) -> None:
        """Forget the items whose values all have ids <= ``through`` (deleted from the file)."""
        if through < self.first:
            return
        if through >= self.next_id - 1:
            self.reset(self.next_id)
            return
        # Items starting at or before ``through``; the file deletes whole rows, so
        # ``through`` ends one: those are exactly the deleted ones.
        self._drop_front(bisect_right(self._starts, through))

    def _drop_front(self, count: int) -> None:
        if count <= 0:
            return
        if count >= len(self._starts):
            self.reset(self.next_id)
            return
        del self._starts[:count]
        del self._items[:count]
        self.first = self._starts[0]
        self.values = self.next_id - self.first

    def covers(self, start: int) -> bool:
        """Whether every value with id > ``start`` still buffered is held here."""
        return bool(self._items) and start >= self.first - 1

    def after(self, start: int) -> Iterator[StoredItem]:
        """The held items from the one holding value ``start + 1`` on (``covers(start)`` must hold)."""
        starts, items = self._starts, self._items
        i = max(bisect_right(starts, start + 1) - 1, 0)
        for k in range(i, len(items)):
            yield starts[k], items[k]
