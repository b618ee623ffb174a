"""Wire encodings of frames: SenML packs and line protocol, a frame at a time.

The output is byte for byte what ``gateway.encoding`` writes for the frame's
readings (``Frame.readings()``); only the cost differs. Encoding a reading
paid for its names, tags and number one value at a time (SenML 4-9 us, line
protocol 1.3-2.8 us per value, bench/bench_frame_encoding.py); here what
depends on the frame's *layout* (names, units, measurement) is turned once
into a ``%``-template kept in ``FrameFields.memo``, what depends on the frame's
device and tag set is built once per frame, and the values are formatted by
one ``template % args`` in C (0.4-1 us per value, most of it ``repr`` of the
float: the exact shortest text both formats carry). A one-value frame (a poll
split by per-register tags) takes its record or line prefix from a cache per
series instead (about 1.2 us per value).

Only the common case takes that road: every value a plain ``float`` or ``int``
(and ``bool`` for line protocol, which writes it as 1.0/0.0) and finite.
Anything else (strings, NaN, an unusable name) goes through the per-reading
encoder, which gives the same bytes and raises the same ``EncodingError``
naming the reading, so the dispatcher's bisection still finds the one bad value.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable, Mapping
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

# FrameFields.memo keys, per template variant: (tagged, graded) and graded.
_SENML_MEMO: Final = {(t, g): f"senml:{t:d}{g:d}" for t in (False, True) for g in (False, True)}
_LP_MEMO: Final = {False: "line_protocol", True: "line_protocol:graded"}
_SENML_BAKED: Final = "senml:baked"  # {name suffix of a tag set: template}
_LP_BAKED: Final = "line_protocol:baked"  # {(tags before unit, tags after unit): template}
_LP_MARKED: Final = "line_protocol:marked"  # the layout's lines with marks for the tags and the timestamp
_TS_MARK: Final = "\x00"  # where a baked line takes the timestamp (no tag, quantity or unit holds it: checked)
_BEFORE_MARK: Final = "\x01"  # where a marked layout takes the tags that sort before ``unit``
_AFTER_MARK: Final = "\x02"  # and those after it
_LP_MARKS: Final = (_TS_MARK, _BEFORE_MARK, _AFTER_MARK)
_BAKED_MAX: Final = 256  # tag sets per layout with a template of their own (channels of a meter, phases)
# Line protocol writes the device into every line, so its tag sets are per device: 100 meters x 13 channels of
# one layout are 1,300. Baked, they cost ~3 kB each (4 MB there: the influxdb sink has no memory target
# beside the mqtt one's), and save re-making the lines per frame, ~0.1-0.25 us a value at 100 x 500.
_LP_BAKED_MAX: Final = 2048
_LP_INVALID: Final = ""  # memo value of a layout line protocol cannot express
# Entries remembered before a cache starts again: devices (base names, tag texts), or series for
# one-value frames. Above the number of series a site has (bench_load: 100 x 500 = 50,000), so that
# a full cache is a sign of tags with unbounded values, not of a big site (~350 bytes per series).
_CACHE_MAX: Final = 100_000

_SENML_NUMBERS: Final = frozenset({float, int})  # bool is not: it is "vb":true, not "v":True
_LP_NUMBERS: Final = frozenset({float, int, bool})  # all written as float("value=1.0")
_FLOAT: Final = frozenset({float})
# What a quality adds after the value (nothing for GOOD), as the per-reading encoders write it.
_SENML_QUALITY: Final = {q: f',"quality":{int(q)}' if q else "" for q in Quality}
_LP_QUALITY: Final = {q: f",quality={int(q)}i" if q else "" for q in Quality}


def _value_kinds(frame: Frame, allowed: frozenset[type]) -> set[type] | None:
    """The types of the frame's values if it can take the template road, else None."""
    values = frame.values
    if type(values) is array and values.typecode == "d":  # a frame of floats (gateway.frame.float_array)
        kinds: set[type] = {float}
        if float not in allowed:
            return None
    else:
        kinds = set(map(type, values))
        if not kinds <= allowed:
            return None
    try:
        total = sum(values)  # type: ignore[arg-type]  # numbers only, checked above
    except OverflowError:  # an int too large for a float: the per-reading road decides
        return None
    # NaN or infinity make the sum NaN; so can a finite overflow, which then takes the per-reading road.
    return kinds if total - total == 0 else None


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
    key = _SENML_MEMO[tagged, graded]
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


def _senml_tagged_template(fields: FrameFields, suffix: str) -> str | None:
    """The layout's template with the name suffix of one tag set written in, so that the values are the
    only arguments (interleaving the suffix with them cost ~0.5 us a value); None past a few tag sets
    per layout, which then take the interleaved road."""
    baked: dict[str, str] | None = fields.memo.get(_SENML_BAKED)
    if baked is None:
        baked = fields.memo[_SENML_BAKED] = {}
    hit = baked.get(suffix)
    if hit is None:
        if len(baked) >= _BAKED_MAX:
            return None
        names = [_percent(senml_safe(q) + suffix) for q in fields.quantities]
        units = [_percent(json.dumps(u, ensure_ascii=False)) for u in fields.units]
        hit = baked[suffix] = ",{".join(f'"n":"{n}","u":{u},"v":%r}}' for n, u in zip(names, units, strict=True))
    return hit


def _senml_suffix(tags: Mapping[str, str]) -> str:
    """What a tag set adds to each record name (see ``gateway.encoding.senml_record_name``)."""
    return "".join(f"/{senml_safe(k)}/{senml_safe(v)}" for k, v in sorted(effective_tags(tags).items()))


class SenMLFrameEncoder:
    """Frames -> SenML packs, one per device and timestamp, as ``senml_pack(group_for_senml(...))`` does."""

    def __init__(self) -> None:
        self._base_names: dict[tuple[str, str, str], str] = {}
        self._suffix = TagsCache(_senml_suffix, "")
        self._singles: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[FrameFields, str]] = {}

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
        parts = []
        for frame in group:
            records = self._records(frame)
            if records is None:
                readings: list[Reading] = [r for f in group for r in f.readings()]
                return dumps_compact(senml_pack(readings))  # raises EncodingError naming the reading
            parts.append(records)
        first = group[0]
        return f"[{{{self._base(first)}{first.ts_ns / 1e9!r},{',{'.join(parts)}]".encode()

    def _base(self, frame: Frame) -> str:
        key = (frame.site, frame.gateway, frame.device)
        base = self._base_names.get(key)
        if base is None:
            if len(self._base_names) >= _CACHE_MAX:
                self._base_names.clear()
            bn = json.dumps(senml_base_name(*key), ensure_ascii=False)
            base = self._base_names[key] = f'"bn":{bn},"bt":'
        return base

    def _single_record(self, frame: Frame) -> str:
        """``"n":"name","u":"unit","v":`` of a one-value frame."""
        fields, tags = frame.fields, frame.tags
        # The interned layout by identity (the entry holds it, so the id is not reused), the tags by content.
        key = (id(fields), tuple(tags.items()))
        hit = self._singles.get(key)
        if hit is not None and hit[0] is fields:
            return hit[1]
        name = senml_safe(fields.quantities[0]) + self._suffix(tags)  # as in _senml_template, not a template
        record = f'"n":"{name}","u":{json.dumps(fields.units[0], ensure_ascii=False)},"v":'
        if len(self._singles) >= _CACHE_MAX:
            self._singles.clear()
        self._singles[key] = (fields, record)
        return record

    def _records(self, frame: Frame) -> str | None:
        """The frame's records without the leading '{'; None if they need the per-reading encoder."""
        values = frame.values
        qualities = frame.qualities
        if len(values) == 1 and qualities is None:  # a poll split by per-register tags: many of these
            value = values[0]
            if type(value) is int or (type(value) is float and math.isfinite(value)):
                return f"{self._single_record(frame)}{value!r}}}"
        if _value_kinds(frame, _SENML_NUMBERS) is None:
            return None
        suffix = self._suffix(frame.tags)
        if qualities is None:
            args = values if type(values) is tuple else tuple(values)
            if not suffix:
                return _senml_template(frame.fields, False, False) % args
            baked = _senml_tagged_template(frame.fields, suffix)
            if baked is not None:
                return baked % args
        template = _senml_template(frame.fields, bool(suffix), qualities is not None)
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
    key = _LP_MEMO[graded]
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


def _lp_tagged_template(fields: FrameFields, before: str, after: str) -> str | None:
    """The layout's lines with one tag set written in and ``_TS_MARK`` for the timestamp: the numbers are
    then the only arguments (interleaving tags and timestamp with them cost ~0.4 us a value); None past a
    few tag sets per layout, or if a tag could hold the mark."""
    baked: dict[tuple[str, str], str] | None = fields.memo.get(_LP_BAKED)
    if baked is None:
        baked = fields.memo[_LP_BAKED] = {}
    hit = baked.get((before, after))
    if hit is None:
        marked = _lp_marked_template(fields)
        if marked is None or any(mark in before or mark in after for mark in _LP_MARKS):
            return None
        hit = marked.replace(_BEFORE_MARK, _percent(before)).replace(_AFTER_MARK, _percent(after))
        # Past the bound the lines are made again per frame: two C passes over the text, ~0.1 us a value,
        # where interleaving the tags cost ~0.4.
        if len(baked) < _LP_BAKED_MAX:
            baked[before, after] = hit
    return hit


def _lp_marked_template(fields: FrameFields) -> str | None:
    """The layout's lines with marks where the tags before and after ``unit`` and the timestamp go, and ``%r``
    for the numbers; None if the layout cannot be written or a name holds a mark (the marks must be ours)."""
    hit: str | None = fields.memo.get(_LP_MARKED, "")
    if hit == "":
        hit = None
        texts = (*fields.quantities, *fields.units)
        if _lp_template(fields, False) and not any(mark in text for text in texts for mark in _LP_MARKS):
            lines = []
            for quantity, unit in zip(fields.quantities, fields.units, strict=True):  # as _lp_template writes them
                unit_tag = f",unit={escape_tag(unit)}" if unit else ""
                lines.append(
                    f"{_percent(escape_measurement(quantity))}{_BEFORE_MARK}{_percent(unit_tag)}{_AFTER_MARK}"
                    f" value=%r {_TS_MARK}"
                )
            hit = "\n".join(lines)
        fields.memo[_LP_MARKED] = hit
    return hit


def _split_tag_text(frame: Frame) -> tuple[str, str] | None:
    """The frame's tags (its own and site, gateway, device) as line protocol, sorted by key, split
    into those before and after ``unit``; None if one cannot be written."""
    tags = {"site": frame.site, "gateway": frame.gateway, "device": frame.device}
    tags.update(effective_tags(frame.tags))
    try:
        parts = [(k, f",{escape_tag(k)}={escape_tag(v)}") for k, v in sorted(tags.items()) if k and v]
    except ValueError:
        return None
    # Arguments of the template, not part of it: no '%' doubling here.
    return "".join(text for k, text in parts if k < "unit"), "".join(text for k, text in parts if k > "unit")


class FrameLineProtocolEncoder(LineProtocolEncoder):
    """A ``LineProtocolEncoder`` that also encodes frames; one value costs one format of its number."""

    def __init__(self) -> None:
        super().__init__()
        self._series: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], tuple[str, str] | None] = {}
        # One-value frames (a poll split by per-register tags): the whole ``measurement,tags value=``.
        self._singles: dict[tuple[int, str, str, str, tuple[tuple[str, str], ...]], tuple[FrameFields, str | None]] = {}

    def _tag_text(self, frame: Frame) -> tuple[str, str] | None:
        """The frame's tags as line protocol, split around ``unit``; None if one cannot be written."""
        key = (frame.site, frame.gateway, frame.device, tuple(frame.tags.items()))
        try:
            return self._series[key]
        except KeyError:
            pass
        split = _split_tag_text(frame)
        if len(self._series) >= _CACHE_MAX:
            self._series.clear()
        self._series[key] = split
        return split

    def _single_prefix(self, frame: Frame) -> str | None:
        """``measurement,tags value=`` of a one-value frame; None if line protocol cannot write it."""
        fields = frame.fields
        # The interned layout by identity (the entry holds it, so the id is not reused), the tags by content.
        key = (id(fields), frame.device, frame.site, frame.gateway, tuple(frame.tags.items()))
        hit = self._singles.get(key)
        if hit is not None and hit[0] is fields:
            return hit[1]
        split = _split_tag_text(frame)  # not kept in _series too: one entry per series is enough
        prefix: str | None = None
        if split is not None:
            unit = fields.units[0]
            try:
                unit_tag = f",unit={escape_tag(unit)}" if unit else ""
                prefix = f"{escape_measurement(fields.quantities[0])}{split[0]}{unit_tag}{split[1]} value="
            except ValueError:
                pass
        if len(self._singles) >= _CACHE_MAX:
            self._singles.clear()
        self._singles[key] = (fields, prefix)
        return prefix

    def frame_lines(self, frames: Iterable[Frame]) -> list[str]:
        """Newline-joined lines per frame, as ``lines(frame.readings())`` gives them."""
        out: list[str] = []
        append = out.append
        for frame in frames:
            values = frame.values
            if not values:
                continue
            qualities = frame.qualities
            if len(values) == 1 and qualities is None and type(values[0]) in _LP_NUMBERS:
                number = float(values[0])
                prefix = self._single_prefix(frame) if number - number == 0 else None
                if prefix is not None:
                    append(f"{prefix}{number!r} {frame.ts_ns}")
                    continue
            template = _lp_template(frame.fields, qualities is not None)
            split = self._tag_text(frame) if template else None
            kinds = _value_kinds(frame, _LP_NUMBERS) if split is not None else None
            if split is None or kinds is None:
                append("\n".join(self.lines(frame.readings())))  # raises EncodingError naming the reading
                continue
            before, after = split
            floats = values if kinds == _FLOAT else list(map(float, values))
            baked = _lp_tagged_template(frame.fields, before, after) if qualities is None else None
            if baked is not None:
                # The timestamp, the same on every line, written in by one C pass; the numbers by another.
                append(baked.replace(_TS_MARK, str(frame.ts_ns)) % (floats if type(floats) is tuple else tuple(floats)))
                continue
            if qualities is None:
                row: list[object] = [before, after, None, str(frame.ts_ns)] * len(values)
                row[2::4] = floats
                args = tuple(row)
            else:
                grades = map(_LP_QUALITY.__getitem__, qualities)
                args = _interleave(len(values), (before, after, None, None, str(frame.ts_ns)), {2: floats, 3: grades})
            append(template % args)
        return out

    def encode_frames(self, frames: Iterable[Frame]) -> bytes:
        return "\n".join(self.frame_lines(frames)).encode()
