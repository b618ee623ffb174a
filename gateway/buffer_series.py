"""Interning of series rows (site, gateway, device, quantity, unit, tags) in a ``series`` table,
and of frame layouts (quantities, units) in a ``layouts`` table.

Used by the durable buffer and by the local store, whose ``series`` tables have the same columns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Final

from gateway.buffer_codec import SeriesKey, from_sql_text, layout_size, series_size, to_sql_text
from gateway.frame import FrameFields
from gateway.tags import TagsCache, decode_tags, encode_tags

# Bounds the caches when tags vary per reading (each distinct tag set is a
# series); past this the caches start again from empty and refill from SQLite.
_CACHE_MAX: Final = 50_000

SeriesFields = tuple[str, str, str, str, str, Mapping[str, str]]

_COLUMNS: Final = "site, gateway, device, quantity, unit, tags"


class SeriesTable:
    """Maps series keys to ids (for append) and ids to decoded fields (for take).

    Entries created inside a transaction are remembered so that a rollback
    can forget them: a cached id must always exist in the database.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.by_key: dict[SeriesKey, tuple[int, int]] = {}
        self._by_id: dict[int, SeriesFields] = {}
        self._created: list[tuple[SeriesKey, int]] = []
        self.tags_text = TagsCache(encode_tags, "")

    def lookup(self, key: SeriesKey) -> tuple[int, int]:
        """(id, logical size) of a series, inserting it if new. Call inside a write transaction."""
        hit = self.by_key.get(key)
        if hit is not None:
            return hit
        stored = tuple(to_sql_text(part) for part in key)
        row = self._conn.execute(
            "SELECT id FROM series WHERE site=? AND gateway=? AND device=? AND quantity=? AND unit=? AND tags=?",
            stored,
        ).fetchone()
        if row is None:
            sid = self._conn.execute(f"INSERT INTO series ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", stored).lastrowid
            assert sid is not None
            self._created.append((key, sid))
        else:
            sid = row[0]
        if len(self.by_key) >= _CACHE_MAX:
            self.by_key.clear()
        entry = (sid, series_size(key))
        self.by_key[key] = entry
        return entry

    def fields(self, sid: int) -> SeriesFields:
        hit = self._by_id.get(sid)
        if hit is not None:
            return hit
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM series WHERE id=?", (sid,)).fetchone()
        if row is None:
            raise LookupError(f"series {sid} missing from the buffer")
        site, gateway, device, quantity, unit, tags = (from_sql_text(part) for part in row)
        fields: SeriesFields = (site, gateway, device, quantity, unit, decode_tags(tags))
        if len(self._by_id) >= _CACHE_MAX:
            self._by_id.clear()
        self._by_id[sid] = fields
        return fields

    def committed(self) -> None:
        self._created.clear()

    def rolled_back(self) -> None:
        for key, sid in self._created:
            self.by_key.pop(key, None)
            self._by_id.pop(sid, None)
        self._created.clear()

    def forget_all(self) -> None:
        """Forget every cached entry (after series rows were deleted: their ids must not be used again)."""
        self.by_key.clear()
        self._by_id.clear()
        self._created.clear()


class LayoutTable:
    """Maps frame layouts (``FrameFields``) to ids in the ``layouts`` table and back.

    Keyed by the interned FrameFields object (its ``id()``, checked with ``is``):
    every frame of a device shares one, so a hit is one int-keyed dict lookup
    instead of hashing hundreds of names. Not in ``FrameFields.memo``: ids are
    per database file, and several buffers may be open in one process.
    Entries created inside a transaction are forgotten again on rollback.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._by_obj: dict[int, tuple[FrameFields, int, int]] = {}
        self._by_id: dict[int, FrameFields] = {}
        self._created: list[int] = []

    def lookup(self, fields: FrameFields) -> tuple[int, int]:
        """(id, logical size) of a layout, inserting it if new. Call inside a write transaction."""
        hit = self._by_obj.get(id(fields))
        if hit is not None and hit[0] is fields:
            return hit[1], hit[2]
        quantities = json.dumps(fields.quantities, separators=(",", ":"))  # ASCII, lossless
        units = json.dumps(fields.units, separators=(",", ":"))
        row = self._conn.execute(
            "SELECT id FROM layouts WHERE quantities=? AND units=?", (quantities, units)
        ).fetchone()
        if row is None:
            lid = self._conn.execute(
                "INSERT INTO layouts (quantities, units, n) VALUES (?, ?, ?)", (quantities, units, len(fields))
            ).lastrowid
            assert lid is not None
            self._created.append(lid)
        else:
            lid = row[0]
        if len(self._by_obj) >= _CACHE_MAX:
            self._by_obj.clear()
        size = layout_size(fields.quantities, fields.units)
        self._by_obj[id(fields)] = (fields, lid, size)
        return lid, size

    def fields(self, lid: int) -> FrameFields:
        hit = self._by_id.get(lid)
        if hit is not None:
            return hit
        row = self._conn.execute("SELECT quantities, units FROM layouts WHERE id=?", (lid,)).fetchone()
        if row is None:
            raise LookupError(f"layout {lid} missing from the buffer")
        fields = FrameFields.of(json.loads(row[0]), json.loads(row[1]))
        if len(self._by_id) >= _CACHE_MAX:
            self._by_id.clear()
        self._by_id[lid] = fields
        return fields

    def committed(self) -> None:
        self._created.clear()

    def rolled_back(self) -> None:
        created = set(self._created)
        for key, (_, lid, _) in list(self._by_obj.items()):
            if lid in created:
                del self._by_obj[key]
        for lid in created:
            self._by_id.pop(lid, None)
        self._created.clear()
