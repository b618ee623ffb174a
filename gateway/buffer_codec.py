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

from typing import Final

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
