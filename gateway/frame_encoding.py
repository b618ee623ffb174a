"""Wire encodings of frames: SenML packs and line protocol, a frame at a time.

The output is byte for byte what ``gateway.encoding`` writes for the frame's
readings (``Frame.readings()``); only the cost differs. Encoding a reading
paid for its names, tags and number one value at a time (SenML 5-8 us, line
protocol 1.6-2.7 us per value, bench/bench_frame_encoding.py); here what
depends on the frame's *layout* (names, units, measurement) is turned once
into a ``%``-template kept in ``FrameFields.memo``, what depends on the frame's
device and tag set is built once per frame, and the values are formatted by
one ``template % args`` in C (0.5-1 us per value, most of it ``repr`` of the
float: the exact shortest text both formats carry).

Only the common case takes that road: every value a plain ``float`` or ``int``
(and ``bool`` for line protocol, which writes it as 1.0/0.0) and finite.
Anything else (strings, NaN, an unusable name)
goes through the per-reading encoder, which gives the same bytes and raises
the same ``EncodingError`` naming the reading, so the dispatcher's bisection
still finds the one bad value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from gateway.encoding import (
    LineProtocolEncoder,
    dumps_compact,
    effective_tags,
    escape_measurement,
    escape_tag,
    senml_base_name,
    senml_pack,
    senml_safe,
)
from gateway.frame import Frame, FrameFields
from gateway.model import Quality, Reading
from gateway.tags import TagsCache

_SENML_MEMO: Final = "senml"  # FrameFields.memo keys (prefixes)
_LP_MEMO: Final = "line_protocol"
_LP_INVALID: Final = ""  # memo value of a layout line protocol cannot express
_CACHE_MAX: Final = 10_000  # distinct devices remembered before starting again

_SENML_NUMBERS: Final = frozenset({float, int})  # bool is not: it is "vb":true, not "v":True
_LP_NUMBERS: Final = frozenset({float, int, bool})  # all written as float("value=1.0")
# What a quality adds after the value (nothing for GOOD), as the per-reading encoders write it.
_SENML_QUALITY: Final = {q: f',"quality":{int(q)}' if q else "" for q in Quality}
_LP_QUALITY: Final = {q: f",quality={int(q)}i" if q else "" for q in Quality}


def _all_finite(values: Sequence[float | int]) -> bool:
    """True if no value is NaN or infinite (their sum would not be finite)."""
    try:
        total = sum(values)
    except OverflowError:  # an int too large for a float: let the per-reading path decide
        return False
    return total - total == 0  # NaN or infinity give NaN; a finite sum that overflowed takes the slow path


def _value_kinds(frame: Frame, allowed: frozenset[type]) -> set[type] | None:
    """The types of the frame's values if it can take the template road, else None."""
    kinds = set(map(type, frame.values))
    return kinds if kinds <= allowed and _all_finite(frame.values) else None  # type: ignore[arg-type]


def _percent(text: str) -> str:
    return text.replace("%", "%%")


def _interleave(n: int, row: tuple[object, ...], columns: Mapping[int, Iterable[object]]) -> tuple[object, ...]:
    """The arguments of a template repeating ``row`` ``n`` times, column ``i`` taken from ``columns[i]``."""
    args = list(row) * n
    width = len(row)
    for i, column in columns.items():
        args[i::width] = column
    return tuple(args)


# --- SenML --------------------------------------------------------------------------------------


def _senml_template(fields: FrameFields, tagged: bool, graded: bool) -> str:
    """The records of a layout without their leading '{': a '%s' name suffix if ``tagged``, a '%s'
    quality after the value if ``graded`` (the frame has qualities).

    ``"n":"temperature","u":"Cel","v":%r},{"n":...`` is what ``dumps_compact``
    writes for these records: compact separators, ``ensure_ascii=False``. Built
    on first use: a layout's frames usually all have tags, or none.
    """
    key = f"{_SENML_MEMO}:{tagged:d}{graded:d}"
    hit: str | None = fields.memo.get(key)
    if hit is None:
        suffix = "%s" if tagged else ""
        quality = "%s" if graded else ""
        records = []
        for quantity, unit in zip(fields.quantities, fields.units, strict=True):
            name = _percent(senml_safe(quantity))  # [A-Za-z0-9-./_] only: nothing to escape in JSON
            unit_json = _percent(json.dumps(unit, ensure_ascii=False))
            records.append(f'"n":"{name}{suffix}","u":{unit_json},"v":%r{quality}}}')
        hit = fields.memo[key] = ",{".join(records)
    return hit


def _senml_suffix(tags: Mapping[str, str]) -> str:
    """What a tag set adds to each record name (see ``gateway.encoding.senml_record_name``)."""
    return "".join(f"/{senml_safe(k)}/{senml_safe(v)}" for k, v in sorted(effective_tags(tags).items()))


class SenMLFrameEncoder:
    """Frames -> SenML packs, one per device and timestamp, as ``senml_pack(group_for_senml(...))`` does."""

    def __init__(self) -> None:
        self._base_names: dict[tuple[str, str, str], str] = {}
        self._suffix = TagsCache(_senml_suffix, "")

    def packs(self, frames: Iterable[Frame]) -> list[tuple[Frame, bytes]]:
        """(first frame, payload) per pack, in first-seen order; EncodingError for an unrepresentable value."""
        groups: dict[tuple[str, str, str, int], list[Frame]] = {}
        for frame in frames:
            if frame.values:  # an empty frame has no record (and no pack)
                key = (frame.site, frame.gateway, frame.device, frame.ts_ns)
                group = groups.get(key)
                if group is None:
                    groups[key] = [frame]
                else:
                    group.append(frame)
        return [(group[0], self._pack(group)) for group in groups.values()]

    def _pack(self, group: list[Frame]) -> bytes:
        if any(_value_kinds(f, _SENML_NUMBERS) is None for f in group):
            readings: list[Reading] = [r for f in group for r in f.readings()]
            return dumps_compact(senml_pack(readings))
        first = group[0]
        records = ",{".join(self._records(f) for f in group)
        return f"[{{{self._base(first)}{first.ts_ns / 1e9!r},{records}]".encode()

    def _base(self, frame: Frame) -> str:
        key = (frame.site, frame.gateway, frame.device)
        base = self._base_names.get(key)
        if base is None:
            if len(self._base_names) >= _CACHE_MAX:
                self._base_names.clear()
            bn = json.dumps(senml_base_name(*key), ensure_ascii=False)
            base = self._base_names[key] = f'"bn":{bn},"bt":'
        return base

    def _records(self, frame: Frame) -> str:
        values = frame.values
        suffix = self._suffix(frame.tags)
        qualities = frame.qualities
        template = _senml_template(frame.fields, bool(suffix), qualities is not None)
        if not suffix and qualities is None:
            return template % (values if type(values) is tuple else tuple(values))
        if qualities is None:
            return template % _interleave(len(values), (suffix, None), {1: values})
        grades = map(_SENML_QUALITY.__getitem__, qualities)
        if not suffix:
            return template % _interleave(len(values), (None, None), {0: values, 1: grades})
        return template % _interleave(len(values), (suffix, None, None), {1: values, 2: grades})


# --- line protocol ------------------------------------------------------------------------------


def _lp_template(fields: FrameFields, graded: bool) -> str:
    """Lines of a layout: ``measurement%s,unit=U%s value=%r %s`` per position ('' if one cannot be written).

    The first two ``%s`` take the frame's tags that sort before and after
    ``unit`` (the keys are sorted as the per-reading encoder sorts them), the
    last one its timestamp; if ``graded`` another ``%s`` after the value takes
    its quality.
    """
    key = f"{_LP_MEMO}:{graded:d}"
    hit: str | None = fields.memo.get(key)
    if hit is None:
        quality = "%s" if graded else ""
        lines = []
        try:
            for quantity, unit in zip(fields.quantities, fields.units, strict=True):
                measurement = escape_measurement(quantity)
                unit_tag = f",unit={escape_tag(unit)}" if unit else ""  # an empty tag value is not written
                lines.append(f"{_percent(measurement)}%s{_percent(unit_tag)}%s value=%r{quality} %s")
            hit = "\n".join(lines)
        except ValueError:
            hit = _LP_INVALID
        fields.memo[key] = hit
    return hit


class FrameLineProtocolEncoder(LineProtocolEncoder):
    """A ``LineProtocolEncoder`` that also encodes frames; one value costs one format of its number."""

    def __init__(self) -> None:
        super().__init__()
        self._series: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], tuple[str, str] | None] = {}

    def _tag_text(self, frame: Frame) -> tuple[str, str] | None:
        """The frame's tags as line protocol, split around ``unit``; None if one cannot be written."""
        key = (frame.site, frame.gateway, frame.device, tuple(frame.tags.items()))
        try:
            return self._series[key]
        except KeyError:
            pass
        tags = {"site": frame.site, "gateway": frame.gateway, "device": frame.device}
        tags.update(effective_tags(frame.tags))
        try:
            parts = [(k, f",{escape_tag(k)}={escape_tag(v)}") for k, v in sorted(tags.items()) if k and v]
            # Arguments of the template, not part of it: no '%' doubling here.
            split: tuple[str, str] | None = (
                "".join(text for k, text in parts if k < "unit"),
                "".join(text for k, text in parts if k > "unit"),
            )
        except ValueError:
            split = None
        if len(self._series) >= _CACHE_MAX:
            self._series.clear()
        self._series[key] = split
        return split

    def frame_lines(self, frames: Iterable[Frame]) -> list[str]:
        """Newline-joined lines per frame, as ``lines(frame.readings())`` gives them."""
        out: list[str] = []
        append = out.append
        for frame in frames:
            values = frame.values
            if not values:
                continue
            qualities = frame.qualities
            template = _lp_template(frame.fields, qualities is not None)
            split = self._tag_text(frame) if template else None
            kinds = _value_kinds(frame, _LP_NUMBERS) if split is not None else None
            if split is None or kinds is None:
                append("\n".join(self.lines(frame.readings())))  # raises EncodingError naming the reading
                continue
            before, after = split
            floats = values if kinds == {float} else list(map(float, values))
            if qualities is None:
                args = _interleave(len(values), (before, after, None, str(frame.ts_ns)), {2: floats})
            else:
                grades = map(_LP_QUALITY.__getitem__, qualities)
                args = _interleave(len(values), (before, after, None, None, str(frame.ts_ns)), {2: floats, 3: grades})
            append(template % args)
        return out

    def encode_frames(self, frames: Iterable[Frame]) -> bytes:
        return "\n".join(self.frame_lines(frames)).encode()
