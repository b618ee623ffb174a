"""Wire encodings of readings: InfluxDB line protocol, SenML JSON packs, per-reading JSON.

The mappings are specified (with worked examples) in docs/data-model.md; keep the
two in step. Every encoder raises :class:`EncodingError` for a reading that has
no valid representation (a NaN, a newline in a tag); sinks turn that into
``Outcome.REJECTED`` so the core bisects the batch and dead-letters just that
reading instead of losing the batch or crashing.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.model import Quality, Reading

# Identity tags written from the Reading's own fields; a reading tag with one of
# these names (or a name InfluxDB reserves) is renamed with this prefix rather
# than dropped, so no information is lost and the identity cannot be forged.
IDENTITY_TAGS = ("site", "gateway", "device", "unit")
RESERVED_TAG_KEYS = frozenset({*IDENTITY_TAGS, "quality", "_measurement", "_field", "time"})
RENAMED_TAG_PREFIX = "tag_"

# Limit on the number of cached series prefixes; a gateway has a few thousand
# series at most, so hitting this means tags carry unbounded values (a bug in a
# driver) and clearing is better than growing without bound.
_PREFIX_CACHE_MAX = 50_000


class EncodingError(ValueError):
    """A reading that cannot be represented in a wire format."""

    def __init__(self, reading: Reading, reason: str) -> None:
        self.reading = reading
        self.reason = reason
        super().__init__(
            f"{reason}: {reading.site}/{reading.gateway}/{reading.device} {reading.quantity}={reading.value!r}"
            f" @ {reading.ts_ns}"
        )


def effective_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The reading's own tags with reserved names renamed (``site`` -> ``tag_site``)."""
    out: dict[str, str] = {}
    for key, value in tags.items():
        out[RENAMED_TAG_PREFIX + key if key in RESERVED_TAG_KEYS else key] = value
    return out


# --- InfluxDB line protocol ---------------------------------------------------
# https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/#special-characters

_MEASUREMENT_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})
# Backslashes are doubled too: the spec reads "\\" as one literal backslash,
# and an undoubled trailing backslash would escape the following separator.
_TAG_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_FIELD_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})


def escape_tag(text: str) -> str:
    """A tag key or value as line protocol writes it; ValueError for a newline."""
    if "\n" in text or "\r" in text:
        raise ValueError("line protocol cannot carry a newline in a tag")
    return text.translate(_TAG_ESCAPES)


def escape_measurement(quantity: str) -> str:
    """A quantity as a line-protocol measurement; ValueError if it cannot be one."""
    if not quantity or "\n" in quantity:
        raise ValueError("invalid measurement name")
    return quantity.translate(_MEASUREMENT_ESCAPES)


_PrefixKey = tuple[str, str, str, str, str, frozenset[tuple[str, str]] | None]


class LineProtocolEncoder:
    """Readings -> line protocol, with a cache of escaped series prefixes.

    Hand-written rather than influxdb-client's ``Point``: ``Point`` re-escapes
    every tag of every point and builds dicts per point, about 10x slower, and
    this is the hot path of the InfluxDB sink. The cache makes the per-reading
    cost one tuple, one dict lookup and one f-string.
    """

    def __init__(self) -> None:
        self._prefixes: dict[_PrefixKey, str] = {}

    def _series_prefix(self, r: Reading, key: _PrefixKey) -> str:
        """``measurement,tag=v,... `` (with the trailing space), all tag keys sorted."""
        tags = {"site": r.site, "gateway": r.gateway, "device": r.device, "unit": r.unit}
        tags.update(effective_tags(r.tags))
        try:
            # Sorted by key as InfluxDB recommends (it sorts them itself otherwise);
            # empty keys/values are dropped: line protocol cannot express them.
            tag_text = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if k and v)
            measurement = escape_measurement(r.quantity)
        except ValueError as exc:
            raise EncodingError(r, str(exc)) from None
        prefix = f"{measurement}{tag_text} "
        if len(self._prefixes) >= _PREFIX_CACHE_MAX:
            self._prefixes.clear()
        self._prefixes[key] = prefix
        return prefix

    def lines(self, batch: Iterable[Reading]) -> list[str]:
        prefixes = self._prefixes
        out: list[str] = []
        append = out.append
        isfinite = math.isfinite
        for r in batch:
            tags = r.tags
            key: _PrefixKey = (
                r.quantity, r.device, r.unit, r.site, r.gateway, frozenset(tags.items()) if tags else None,
            )  # fmt: skip
            prefix = prefixes.get(key) or self._series_prefix(r, key)
            v = r.value
            kind = type(v)
            # Every numeric or bool value is written as the float field `value`:
            # a measurement keeps one field type forever, so InfluxDB never
            # answers 400 "field type conflict" when an int sensor sends 21.5.
            if kind is float:
                if not isfinite(v):  # type: ignore[arg-type]  # kind is float
                    raise EncodingError(r, "line protocol cannot carry NaN or infinity")
                field = f"value={v!r}"
            elif kind is bool:
                field = "value=1.0" if v else "value=0.0"
            elif kind is int:
                field = f"value={float(v)!r}"
            elif isinstance(v, str):
                field = f'text="{v.translate(_STRING_FIELD_ESCAPES)}"'
            elif isinstance(v, int | float):  # int/float subclasses (IntEnum, numpy scalars)
                f = float(v)
                if not isfinite(f):
                    raise EncodingError(r, "line protocol cannot carry NaN or infinity")
                field = f"value={f!r}"
            else:
                raise EncodingError(r, f"unsupported value type {type(v).__name__}")
            if r.quality:
                append(f"{prefix}{field},quality={int(r.quality)}i {r.ts_ns}")
            else:
                append(f"{prefix}{field} {r.ts_ns}")
        return out

    def encode(self, batch: Iterable[Reading]) -> bytes:
        """The whole batch as one newline-separated line-protocol body (UTF-8)."""
        return "\n".join(self.lines(batch)).encode()


def to_line_protocol(batch: Iterable[Reading]) -> bytes:
    """Convenience wrapper; sinks keep their own :class:`LineProtocolEncoder` for its cache."""
    return LineProtocolEncoder().encode(batch)


# --- SenML (RFC 8428) -----------------------------------------------------------

# RFC 8428 section 4.5.1: the concatenated name (bn + n) may only use these
# characters, and must start with a letter or digit.
_SENML_NAME_BAD = re.compile(r"[^A-Za-z0-9\-.\/_]")


def senml_safe(part: str) -> str:
    """One name component with every character outside RFC 8428's set (and ':') as '_'."""
    return _SENML_NAME_BAD.sub("_", part) or "_"


def senml_base_name(site: str, gateway: str, device: str) -> str:
    """``{site}:{gateway}:{device}:`` with each part made SenML-safe (see docs/data-model.md)."""
    bn = f"{senml_safe(site)}:{senml_safe(gateway)}:{senml_safe(device)}:"
    # RFC 8428 also wants the name to start with a letter or digit.
    return bn if bn[0].isalnum() else "x" + bn


def senml_record_name(r: Reading) -> str:
    """The quantity, then ``/key/value`` per (effective) tag, sorted, so that two
    readings of one quantity that differ only by a tag keep distinct names."""
    name = senml_safe(r.quantity)
    if r.tags:
        name += "".join(f"/{senml_safe(k)}/{senml_safe(v)}" for k, v in sorted(effective_tags(r.tags).items()))
    return name


def senml_pack(readings: Sequence[Reading], base_name: str | None = None) -> list[dict[str, Any]]:
    """One SenML pack for readings of one device.

    ``bt`` is the first reading's time in seconds; other readings carry ``t``
    relative to it. Quality other than GOOD goes in an extra ``quality`` field
    (RFC 8428 section 4.4: unknown fields not ending in '_' are ignored by
    receivers that do not understand them).
    """
    if not readings:
        return []
    first = readings[0]
    base_ts = first.ts_ns
    pack: list[dict[str, Any]] = []
    for r in readings:
        record: dict[str, Any] = {"n": senml_record_name(r), "u": r.unit}
        v = r.value
        if isinstance(v, bool):
            record["vb"] = v
        elif isinstance(v, str):
            record["vs"] = v
        elif isinstance(v, int | float):
            if not math.isfinite(v):
                raise EncodingError(r, "SenML (JSON) cannot carry NaN or infinity")
            record["v"] = v
        else:
            raise EncodingError(r, f"unsupported value type {type(v).__name__}")
        if r.ts_ns != base_ts:
            record["t"] = (r.ts_ns - base_ts) / 1e9
        if r.quality:
            record["quality"] = int(r.quality)
        pack.append(record)
    bn = base_name if base_name is not None else senml_base_name(first.site, first.gateway, first.device)
    pack[0] = {"bn": bn, "bt": base_ts / 1e9, **pack[0]}
    return pack


def group_for_senml(batch: Iterable[Reading]) -> list[list[Reading]]:
    """Split a batch into one group per device per timestamp, in first-seen order."""
    groups: dict[tuple[str, str, str, int], list[Reading]] = {}
    for r in batch:
        groups.setdefault((r.site, r.gateway, r.device, r.ts_ns), []).append(r)
    return list(groups.values())


def dumps_compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# --- per-reading JSON -------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str:
    # Cached: a batch holds many readings of the same second, and strftime is
    # the most expensive step of the per-reading payload.
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}"


def iso_time(ts_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. ``2024-05-01T10:00:00.000000000Z``."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return f"{_iso_seconds(seconds)}.{nanos:09d}Z"


def reading_json(r: Reading) -> bytes:
    """The per-reading MQTT payload (see docs/data-model.md, "Per-reading JSON")."""
    v = r.value
    if isinstance(v, float) and not math.isfinite(v):
        raise EncodingError(r, "JSON cannot carry NaN or infinity")
    payload = {
        "ts_ns": r.ts_ns,
        "time": iso_time(r.ts_ns),
        "site": r.site,
        "gateway": r.gateway,
        "device": r.device,
        "quantity": r.quantity,
        "value": v,
        "unit": r.unit,
        "quality": Quality(r.quality).name.lower(),
        "tags": effective_tags(r.tags),
    }
    return dumps_compact(payload)
