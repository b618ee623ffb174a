"""How a Reading is laid out in the buffer's SQLite file, and its logical size.

A reading is split into its *series* (site, gateway, device, quantity, unit,
tags: repeated on every poll, stored once in the ``series`` table) and its
*point* (ts_ns, value, kind, quality: one row in ``readings``). That keeps a
row at ~30 bytes instead of ~120 and makes append and take cheaper, which is
what a Raspberry Pi's SD card and CPU both want.

Values round-trip with their exact Python type. SQLite keeps int, float and
str apart by itself (the ``value`` column has no declared type, so no affinity
conversion); the ``kind`` column records what SQLite cannot:
bool (stored as 0/1), NaN (SQLite turns NaN into NULL), ints outside 64 bits
and strings with lone surrogates (not valid UTF-8).
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import Final

from gateway.frame import Frame, float_array
from gateway.model import Quality, Reading, Value
from gateway.tags import encode_tags

KIND_PLAIN: Final = 0  # int, float or str exactly as SQLite returns it
KIND_BOOL: Final = 1
KIND_NAN: Final = 2
KIND_BIGINT: Final = 3  # decimal text
KIND_RAW_STR: Final = 4  # UTF-8 with surrogatepass, as a BLOB

# Per-row bookkeeping that a reading costs on disk whatever its content: the
# id, ts, kind, quality and size columns plus SQLite's record and b-tree cell
# headers. Measured on the bench: ~30 bytes per row with short series.
ROW_OVERHEAD: Final = 32
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_QUALITIES: Final = tuple(Quality)

SqlValue = int | float | str | bytes | None
SeriesKey = tuple[str, str, str, str, str, str]  # site, gateway, device, quantity, unit, tags text


def encoded_len(text: str) -> int:
    """UTF-8 length of ``text`` (lone surrogates count as 3 bytes, as stored)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def to_sql_text(text: str) -> str | bytes:
    """``text`` as SQLite can store it: a TEXT if valid UTF-8, else a BLOB (lossless)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
    return text


def from_sql_text(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else stored.decode("utf-8", "surrogatepass")


def encode_value(value: Value) -> tuple[SqlValue, int, int]:
    """Return (stored value, kind, logical size in bytes) of a reading's value."""
    t = type(value)
    if t is float:
        if value != value:  # NaN
            return None, KIND_NAN, 8
        return value, KIND_PLAIN, 8
    if t is int:
        if _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            return value, KIND_PLAIN, 8
        text = str(value)
        return text, KIND_BIGINT, len(text)
    if t is str:
        stored = to_sql_text(value)  # type: ignore[arg-type]
        kind = KIND_PLAIN if stored is value else KIND_RAW_STR
        return stored, kind, encoded_len(value)  # type: ignore[arg-type]
    if t is bool:
        return int(value), KIND_BOOL, 1
    # Subclasses (IntEnum, numpy-like floats registered as float): store the base type.
    if isinstance(value, bool):
        return int(value), KIND_BOOL, 1
    if isinstance(value, int):
        return encode_value(int(value))
    if isinstance(value, float):
        return encode_value(float(value))
    if isinstance(value, str):
        return encode_value(str(value))
    raise TypeError(f"reading value must be float, int, bool or str, not {t.__name__}")


def decode_value(stored: SqlValue, kind: int) -> Value:
    if kind == KIND_PLAIN:
        return stored  # type: ignore[return-value]
    if kind == KIND_BOOL:
        return bool(stored)
    if kind == KIND_NAN:
        return float("nan")
    if kind == KIND_BIGINT:
        return int(stored)  # type: ignore[arg-type]
    if kind == KIND_RAW_STR:
        return (stored if isinstance(stored, bytes) else b"").decode("utf-8", "surrogatepass")
    raise ValueError(f"unknown value kind {kind} in buffer row")


def quality_of(code: int) -> Quality:
    return _QUALITIES[code]


def series_size(key: SeriesKey) -> int:
    return sum(encoded_len(part) for part in key)


def series_key(reading: Reading) -> SeriesKey:
    tags = reading.tags
    return (
        reading.site,
        reading.gateway,
        reading.device,
        reading.quantity,
        reading.unit,
        encode_tags(tags) if tags else "",
    )


def logical_size(reading: Reading) -> int:
    """Bytes a reading counts against ``max_bytes``: its encoded fields plus a fixed row overhead.

    The series strings are counted in full on every reading although the file
    stores them once, so ``max_bytes`` is a conservative bound on the file.
    """
    return ROW_OVERHEAD + series_size(series_key(reading)) + encode_value(reading.value)[2]


# -- frame rows ------------------------------------------------------------
#
# A frame is stored as ONE row: its values packed into one payload, its
# (quantity, unit) layout as a reference into the ``layouts`` table. The
# payload is packed at C speed with the exact Python types kept: all floats as
# IEEE doubles, all int64 as 8-byte ints (little-endian on disk, so the file
# moves between machines), a mix of the two as one type byte per value and
# the same 8-byte fields, anything else as a JSON list (json keeps int, float,
# bool and str apart; NaN, infinities, big ints and lone surrogates round-trip).

# A frame row's ``kind`` is ``layout id << FRAME_SHIFT | payload format``: a
# reading's kind (0..4) is below FRAME_KIND_MIN, a frame's above. No column is
# added for frames, so a reading's row is exactly as small as in schema v1.
KIND_FRAME_F64: Final = 1
KIND_FRAME_I64: Final = 2
KIND_FRAME_JSON: Final = 3
KIND_FRAME_MIXED: Final = 4  # floats and int64s: one type byte per value, then 8 bytes per value
FRAME_SHIFT: Final = 4
FRAME_KIND_MIN: Final = 1 << FRAME_SHIFT
_FORMAT_MASK: Final = FRAME_KIND_MIN - 1


def frame_kind(layout: int, payload_format: int) -> int:
    return layout << FRAME_SHIFT | payload_format


def frame_layout(kind: int) -> int:
    return kind >> FRAME_SHIFT


_SWAP: Final = sys.byteorder != "little"
_BASE_TYPES: Final = (bool, int, float, str)  # bool first: it is an int
_NUMBER_FLAGS: Final = {float: 0, int: 1}
_NUMBER_CODES: Final = bytes.maketrans(b"\x00\x01", b"dq")
# struct.Struct per mixed layout (a device's frames all have the same one); bounded.
_MIXED: dict[bytes, struct.Struct] = {}
_MIXED_MAX: Final = 1000


def _mixed_struct(flags: bytes) -> struct.Struct:
    hit = _MIXED.get(flags)
    if hit is None:
        if len(_MIXED) >= _MIXED_MAX:
            _MIXED.clear()
        hit = _MIXED[flags] = struct.Struct("<" + flags.translate(_NUMBER_CODES).decode("ascii"))
    return hit


def _payload(floats: array[float]) -> bytes:
    """The little-endian bytes of an array('d')."""
    if _SWAP:
        floats = array("d", floats)
        floats.byteswap()
    return floats.tobytes()


def _packed(typecode: str, values: Sequence[Value]) -> bytes:
    packed = array(typecode, values)  # type: ignore[type-var]
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def encode_frame_values(values: Sequence[Value]) -> tuple[SqlValue, int, int, Sequence[Value]]:
    """Return (payload, kind, logical size of the values, the values as decoding returns them).

    Raises TypeError for a value that is not float, int, bool or str (or a subclass).
    """
    if type(values) is array and values.typecode == "d":  # a frame's float_array: no type check needed
        return _payload(values), KIND_FRAME_F64, 8 * len(values), values
    types = set(map(type, values))
    if types == {float}:
        # Decoded as an array('d') too: 8 bytes a value, not 32, in the in-memory tail and after a restart.
        floats = float_array(values)  # type: ignore[arg-type]  # all floats, checked above
        return _payload(floats), KIND_FRAME_F64, 8 * len(values), floats
    if types == {int}:
        try:
            return _packed("q", values), KIND_FRAME_I64, 8 * len(values), values
        except OverflowError:
            pass  # an int beyond 64 bits: JSON keeps it exact
    elif types == {int, float}:
        flags = bytes(map(_NUMBER_FLAGS.__getitem__, map(type, values)))
        try:
            return flags + _mixed_struct(flags).pack(*values), KIND_FRAME_MIXED, 8 * len(values), values
        except struct.error:
            pass  # an int beyond 64 bits
    exact = types <= {bool, int, float, str}
    if not exact:
        for t in types:
            if not issubclass(t, _BASE_TYPES):
                raise TypeError(f"reading value must be float, int, bool or str, not {t.__name__}")
        # Subclasses (IntEnum, numpy-like floats) are stored as their base type.
        values = tuple(v if type(v) in _BASE_TYPES else _base(v) for v in values)
    text = json.dumps(list(values), separators=(",", ":"))  # ASCII: lone surrogates escaped
    return text, KIND_FRAME_JSON, _values_size(values), values


def _values_size(values: Sequence[Value]) -> int:
    """Sum of ``encode_value``'s sizes, counted in bulk for numbers and bools (plain types only)."""
    kinds = list(map(type, values))
    if str not in kinds:
        ints = [v for v, k in zip(values, kinds, strict=True) if k is int]
        if not ints or (min(ints) >= _INT64_MIN and max(ints) <= _INT64_MAX):  # type: ignore[operator]
            return 8 * len(kinds) - 7 * kinds.count(bool)  # 8 bytes a number, 1 a bool
    return sum(encode_value(v)[2] for v in values)


def _base(value: Value) -> Value:
    for t in _BASE_TYPES:
        if isinstance(value, t):
            return t(value)
    raise TypeError(f"reading value must be float, int, bool or str, not {type(value).__name__}")


def decode_frame_values(payload: SqlValue, kind: int) -> Sequence[Value]:
    """The values of a frame row (``kind`` is the row's kind or just its payload format)."""
    kind &= _FORMAT_MASK
    if kind in (KIND_FRAME_F64, KIND_FRAME_I64):
        unpacked = array("d" if kind == KIND_FRAME_F64 else "q")
        unpacked.frombytes(payload)  # type: ignore[arg-type]
        if _SWAP:
            unpacked.byteswap()
        # floats stay an array('d'), as the poller made them (8 bytes a value while the frame lives)
        return unpacked if kind == KIND_FRAME_F64 else tuple(unpacked)
    if kind == KIND_FRAME_MIXED:
        n = len(payload) // 9  # type: ignore[arg-type]
        return _mixed_struct(payload[:n]).unpack_from(payload, n)  # type: ignore[index, arg-type]
    if kind == KIND_FRAME_JSON:
        return tuple(json.loads(payload))  # type: ignore[arg-type]
    raise ValueError(f"unknown frame value kind {kind} in buffer row")


def encode_qualities(qualities: Sequence[Quality] | None) -> int | bytes:
    """0 when every value is GOOD (the common case), else one byte per value.

    Kept in the v1 ``quality`` column (NOT NULL, which ALTER TABLE cannot relax): an
    integer for a reading or an all-GOOD frame, a BLOB otherwise.
    """
    if qualities is None or not any(qualities):
        return 0
    return bytes(qualities)


def decode_qualities(stored: int | bytes) -> tuple[Quality, ...] | None:
    if type(stored) is bytes:
        return tuple(map(_QUALITIES.__getitem__, stored))
    return None


def layout_size(quantities: Sequence[str], units: Sequence[str]) -> int:
    """Logical size of a frame's layout: every quantity and unit name once."""
    return sum(map(encoded_len, quantities)) + sum(map(encoded_len, units))


def item_size(item: Reading | Frame) -> int:
    """Bytes an item counts against ``max_bytes``. A frame counts like its readings
    would, except that the row overhead and the series strings (site, gateway,
    device, tags, and each quantity and unit name) count once per frame."""
    if not isinstance(item, Frame):
        return logical_size(item)
    f = item
    key = (f.site, f.gateway, f.device, "", "", encode_tags(f.tags) if f.tags else "")
    layout = layout_size(f.fields.quantities, f.fields.units)
    return ROW_OVERHEAD + series_size(key) + layout + encode_frame_values(f.values)[2]
