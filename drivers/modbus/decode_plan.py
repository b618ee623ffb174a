"""Bulk decoding of a poll: per register block one ``struct.unpack``, scale passes over tuples, one Frame per tag set.

Decoding field by field cost about 2 us per value (slicing the words, a
``decode_registers`` call, the scaling and range checks, a ``Reading``); a
wide meter polled every second spent most of the gateway's CPU there. What
varies per poll is only the words, so everything else is computed once per
read request (``BlockDecoder``) and once per device plan (``_Assembly``):

- the struct format of the whole block, with the word/byte order folded in
  (one byte permutation when a field is not big-endian as sent);
- the fields grouped by the operations they need (none, scale, unit factor,
  both), so the arithmetic is ``map(mul, ...)`` over tuples, not a loop;
- a cheap bulk check (the sum is finite, every ranged value within bounds)
  that says "all GOOD" in the common case; only otherwise is each value
  walked with exactly the checks of ``field_value`` (the per-field reference,
  still used by ``gateway modbus probe`` and as the oracle in the tests);
- the frames' layouts: one ``FrameFields`` per tag set of the device.

Results are exactly those of ``field_value``: the same operations in the same
order on the same floats. Words out of 0..0xFFFF or a short answer fall back
to the per-field path, which counts a ``decode_error`` for the affected field.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import add, itemgetter, le, mul, truediv
from typing import Final

from gateway.drivers.modbus.config import FieldSpec
from gateway.drivers.modbus.decode import _STRUCT, scale_divisor
from gateway.drivers.modbus.planner import ReadRequest, Span
from gateway.frame import Frame, FrameFields, all_floats, float_array, make_frame
from gateway.model import Quality, Value
from gateway.quantities import QUANTITIES, UNIT_ALIASES

NOT_FINITE: Final = "not_finite"
OUT_OF_RANGE: Final = "out_of_range"
_UNSIGNED: Final = {1: "H", 2: "I", 4: "Q"}

Picker = Callable[[Sequence[object]], tuple[object, ...]]


def picker(indexes: Sequence[int]) -> Picker:
    """``seq -> tuple(seq[i] for i in indexes)`` at C speed (``itemgetter`` returns a bare item for one index)."""
    if not indexes:
        return lambda seq: ()
    if len(indexes) == 1:
        (only,) = indexes
        return lambda seq: (seq[only],)
    return itemgetter(*indexes)


def final_unit(spec: FieldSpec) -> tuple[str, float | None]:
    """The unit a field's values are delivered in and the factor that gets them there (None: as read)."""
    unit = spec.unit or QUANTITIES[spec.quantity].unit
    target = QUANTITIES[spec.quantity].unit
    if unit == target or spec.type in ("string", "bool") or spec.table in ("coil", "discrete") or spec.bit is not None:
        return unit, None
    alias = UNIT_ALIASES.get(unit)
    if alias is None or alias[0] != target:
        return unit, None  # refused by the config model; kept as is like field_value would
    return target, alias[1]


def _field_bytes(span: Span, start: int, order: str) -> list[int]:
    """Indexes, in the block's bytes, of a field's value bytes in big-endian order (``decode._reorder``)."""
    words = list(range(span.address - start, span.address - start + span.count))
    if order in ("CDAB", "DCBA"):
        words.reverse()
    swap = order in ("BADC", "DCBA")
    return [b for w in words for b in ((2 * w + 1, 2 * w) if swap else (2 * w, 2 * w + 1))]


def _special(spec: FieldSpec) -> Callable[[object], Value] | None:
    """The per-value step of a field that is not plain arithmetic (a bit, a bool, a string); None if plain."""
    if spec.table in ("coil", "discrete"):
        return bool
    if spec.type == "string":
        return lambda raw: raw.rstrip(b"\x00 ").decode("latin-1")  # type: ignore[attr-defined]
    if spec.bit is not None:
        bit = spec.bit
        return lambda raw: bool(raw >> bit & 1)  # type: ignore[operator]
    if spec.type == "bool":
        return lambda raw: raw != 0
    return None


def _scale_operand(scale: float) -> float:
    """What ``_Arith`` applies: the divisor of a decimal scale, or the scale itself. The divisor stays an int,
    as in ``apply_scale``: an int64 beyond 2**53 divided by an int is rounded once, by a float twice."""
    divisor = scale_divisor(scale)
    return scale if divisor is None else divisor


def _or(bound: float | None, default: float) -> float:
    return default if bound is None else bound


def _adds(specs: Iterable[FieldSpec]) -> bool:
    """Whether ``+ offset`` can change a result: always, unless every offset is 0 and every product is an
    integer times a positive scale (never -0.0, which ``+ 0.0`` would turn into 0.0 as field_value does)."""
    return any(s.offset != 0.0 or s.scale <= 0.0 or s.type in ("float32", "float64") for s in specs)


@dataclass(frozen=True, slots=True)
class _Arith:
    """Fields that share one sequence of operations: ``raw [* scale + offset] [* factor]``."""

    positions: Picker  # their raw values, from the block's raw tuple
    scales: tuple[float, ...] | None
    offsets: tuple[float, ...] | None
    factors: tuple[float, ...] | None
    divide: bool = False  # ``scales`` are the divisors of decimal scales (decode.scale_divisor)

    def apply(self, raw: tuple[object, ...]) -> tuple[Value, ...]:
        values = self.positions(raw)
        if self.scales is not None:
            values = map(truediv if self.divide else mul, values, self.scales)  # type: ignore[assignment]
            if self.offsets is not None:
                values = map(add, values, self.offsets)  # type: ignore[assignment]
        if self.factors is not None:
            values = map(mul, values, self.factors)  # type: ignore[assignment]
        return tuple(values)  # type: ignore[arg-type]


class BlockDecoder:
    """Words of one read request -> its fields' final values and qualities (in ``request.fields`` order)."""

    def __init__(self, request: ReadRequest, fields: Sequence[FieldSpec], spans: Sequence[Span]) -> None:
        self.request = request
        self.indexes = request.fields
        specs = [fields[i] for i in request.fields]
        self.specs = specs
        self.units = tuple(final_unit(s)[0] for s in specs)
        self.bits = request.table in ("coil", "discrete")
        self.words = struct.Struct(f">{request.count}H")
        codes: list[str] = []
        perm: list[int] = []
        plain_layout = True  # every field big-endian as sent and in address order: pad bytes, no permutation
        end = 0
        for spec, i in zip(specs, request.fields, strict=True):
            span = spans[i]
            if self.bits:
                perm.append(span.address - request.address)
                continue
            order_bytes = _field_bytes(span, request.address, spec.order)
            if spec.type == "string":
                code = f"{len(order_bytes)}s"
            elif spec.type == "bool" or spec.bit is not None or spec.mask is not None:
                code = _UNSIGNED[span.count]
            else:
                code = _STRUCT[spec.type][0]
            codes.append(code)
            if order_bytes != list(range(order_bytes[0], order_bytes[0] + len(order_bytes))) or order_bytes[0] < end:
                plain_layout = False
            if plain_layout:
                codes[-1] = "x" * (order_bytes[0] - end) + code
                end = order_bytes[-1] + 1
            perm.extend(order_bytes)
        self.pick_bits = picker(perm) if self.bits else None
        self.permute: Picker | None = None
        if not self.bits:
            if plain_layout:
                self.unpack = struct.Struct(">" + "".join(codes)).unpack_from
            else:
                codes = [c.lstrip("x") for c in codes]
                self.unpack = struct.Struct(">" + "".join(codes)).unpack_from
                self.permute = itemgetter(*perm)
        # Post-processing groups: specials one by one, the rest by their operations.
        self.specials: list[tuple[int, Callable[[object], Value]]] = []
        masks: list[tuple[int, int, int]] = []
        arith: dict[tuple[bool, bool, bool], list[int]] = {}
        for k, spec in enumerate(specs):
            step = _special(spec)
            if step is not None:
                self.specials.append((k, step))
                continue
            if spec.mask is not None:
                masks.append((k, spec.mask, (spec.mask & -spec.mask).bit_length() - 1))
            scaled = spec.scale != 1.0 or spec.offset != 0.0
            divided = scaled and scale_divisor(spec.scale) is not None  # as field_value's apply_scale
            arith.setdefault((scaled, divided, final_unit(spec)[1] is not None), []).append(k)
        self.masks = masks
        self.groups = [
            _Arith(
                picker(ks),
                tuple(_scale_operand(specs[k].scale) for k in ks) if scaled else None,
                tuple(specs[k].offset for k in ks) if scaled and _adds(specs[k] for k in ks) else None,
                tuple(final_unit(specs[k])[1] for k in ks) if converted else None,  # type: ignore[misc]
                divided,
            )
            for (scaled, divided, converted), ks in arith.items()
        ]
        numeric = [k for ks in arith.values() for k in ks]
        special = [k for k, _ in self.specials]
        # group outputs, then specials, concatenated -> request field order
        self.reorder = picker([(numeric + special).index(k) for k in range(len(specs))])
        self.numeric = numeric
        ranged = [k for k in numeric if specs[k].valid_min is not None or specs[k].valid_max is not None]
        self.ranged = picker([numeric.index(k) for k in ranged])
        self.lows = tuple(_or(specs[k].valid_min, -math.inf) for k in ranged)
        self.highs = tuple(_or(specs[k].valid_max, math.inf) for k in ranged)

    def decode(
        self, words: bytes | Sequence[int] | Sequence[bool]
    ) -> tuple[tuple[Value, ...], list[str] | None] | None:
        """(values, statuses or None when all are GOOD), or None when the words do not fit (use the per-field path).

        ``words`` are the registers' bytes as sent (``Bus.read_block``: no list of ints on the hot path), or
        the registers (or bits) as a sequence."""
        if self.bits:
            if len(words) < self.request.count:
                return None
            assert self.pick_bits is not None
            return tuple(map(bool, self.pick_bits(words))), None
        if isinstance(words, bytes):
            if len(words) != self.words.size:  # not as many as asked for
                return None
            data = words
        else:
            try:
                data = self.words.pack(*words)
            except struct.error:  # a word out of 0..0xFFFF, or not as many as asked for
                return None
        if self.permute is not None:
            data = bytes(self.permute(data))  # type: ignore[arg-type]
        raw: tuple[object, ...] = self.unpack(data)
        if self.masks:
            as_list = list(raw)
            for k, mask, shift in self.masks:
                as_list[k] = (as_list[k] & mask) >> shift  # type: ignore[operator]
            raw = tuple(as_list)
        numeric: tuple[Value, ...] = ()
        for group in self.groups:
            numeric += group.apply(raw)
        statuses = None if self._all_good(numeric) else self._statuses(numeric)
        specials = tuple(step(raw[k]) for k, step in self.specials) if self.specials else ()
        return self.reorder(numeric + specials), statuses  # type: ignore[return-value]

    def _all_good(self, numeric: tuple[Value, ...]) -> bool:
        try:
            total = sum(numeric)  # type: ignore[arg-type]
        except OverflowError:
            return False
        if total - total != 0:  # an inf or a NaN somewhere (or an overflowing sum): look closer
            return False
        if self.lows:
            ranged = self.ranged(numeric)
            return all(map(le, self.lows, ranged)) and all(map(le, ranged, self.highs))  # type: ignore[arg-type]
        return True

    def _statuses(self, numeric: tuple[Value, ...]) -> list[str] | None:
        """Per field (request order) "ok" or why it is BAD, with ``field_value``'s checks; None if all are ok."""
        statuses = ["ok"] * len(self.specs)
        bad = False
        for value, k in zip(numeric, self.numeric, strict=True):
            spec = self.specs[k]
            if isinstance(value, float) and not math.isfinite(value):
                statuses[k] = NOT_FINITE
            elif (spec.valid_min is not None and value < spec.valid_min) or (  # type: ignore[operator]
                spec.valid_max is not None and value > spec.valid_max  # type: ignore[operator]
            ):
                statuses[k] = OUT_OF_RANGE
            else:
                continue
            bad = True
        return statuses if bad else None


@dataclass(frozen=True, slots=True)
class TagGroup:
    """The fields of a device that share one tag set: one frame per poll."""

    tags: Mapping[str, str]
    indexes: tuple[int, ...]  # field indexes, ascending


def tag_groups(field_tags: Sequence[Mapping[str, str]]) -> list[TagGroup]:
    """Fields grouped by equal tags, in order of their first field."""
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    first: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
    for i, tags in enumerate(field_tags):
        key = tuple(sorted(tags.items()))
        groups.setdefault(key, []).append(i)
        first.setdefault(key, tags)
    return [TagGroup(first[key], tuple(ix)) for key, ix in groups.items()]


class Assembly:
    """The frames of one poll from the outputs of the blocks that decoded (one frame per tag set present)."""

    def __init__(self, blocks: Sequence[BlockDecoder], groups: Sequence[TagGroup], units: Sequence[str],
                 quantities: Sequence[str]) -> None:  # fmt: skip
        position = {i: p for p, i in enumerate(i for b in blocks for i in b.indexes)}
        self.frames = []
        for group in groups:
            present = [i for i in group.indexes if i in position]  # a failed request's fields are absent
            if present:
                fields = FrameFields.of([quantities[i] for i in present], [units[i] for i in present])
                self.frames.append((group.tags, fields, picker([position[i] for i in present])))
        self.values = sum(len(fields) for _, fields, _ in self.frames)

    def build(
        self,
        ts_ns: int,
        site: str,
        gateway: str,
        device: str,
        values: tuple[Value, ...],
        qualities: tuple[Quality, ...] | None,
    ) -> list[Frame]:
        out = []
        # All floats (scaled registers, float32): each frame's values as an array('d'), 8 bytes a value
        # instead of 32 for as long as the frame lives (buffer tail, status page, sinks in flight).
        floats = all_floats(values)
        for tags, fields, pick in self.frames:
            quals = None
            if qualities is not None:
                quals = pick(qualities)
                if quals.count(Quality.GOOD) == len(quals):
                    quals = None
            picked: Sequence[Value] = pick(values)  # type: ignore[assignment]  # a picker returns a tuple of them
            out.append(make_frame(ts_ns, site, gateway, device, fields,
                                  float_array(picked) if floats else picked, tags, quals))  # type: ignore[arg-type]  # fmt: skip
        return out
