"""Poll one device once: run its read plan, decode each block in bulk, build one frame per tag set.

A failed request loses only its own fields (absent from that poll's frames); a
request the device refuses as a whole (illegal address or value, typically a
hole in a coalesced range) is split into one request per field, for this poll
and all later ones. Decoding is in ``decode_plan``; ``field_value`` is the
per-field reference (``gateway modbus probe``, words that do not decode in bulk).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.driver import DriverContext
from gateway.drivers.modbus.bus import Bus, BusUnavailable, ExceptionResponse, ModbusTransportError
from gateway.drivers.modbus.config import FieldSpec
from gateway.drivers.modbus.decode import DecodeError, RegisterValue, apply_scale, decode_registers
from gateway.drivers.modbus.decode_plan import Assembly, BlockDecoder, TagGroup, final_unit, tag_groups
from gateway.drivers.modbus.devices import ResolvedDevice
from gateway.drivers.modbus.planner import ReadRequest, split_request
from gateway.drivers.modbus.words import words_of
from gateway.frame import Frame, FrameFields
from gateway.model import Quality, Value
from gateway.quantities import QUANTITIES, convert_to_canonical
from gateway.tags import EMPTY_TAGS

Decoded = tuple[BlockDecoder, tuple[Value, ...], list[str] | None]  # a block, its values, why some are BAD
SPLIT_CODES = (2, 3)  # illegal data address / value: the range, not the device, is the problem


@dataclass(slots=True)
class FieldResult:
    """What probe shows for one field: raw words, decoded value, status."""

    spec: FieldSpec
    raw: list[int] | list[bool] | None = None
    value: RegisterValue | None = None
    unit: str = ""
    status: str = "ok"
    quality: Quality = Quality.GOOD


@dataclass(slots=True)
class PollResult:
    answered: bool  # at least one request got an answer (data or a Modbus exception)
    frames: list[Frame] = field(default_factory=list)
    values: int = 0  # in all frames
    fields: list[FieldResult] = field(default_factory=list)  # with poll(detail=True) only
    failure: str = ""
    requests: int = 0


def field_value(spec: FieldSpec, words: Sequence[int] | Sequence[bool]) -> tuple[RegisterValue, str, Quality, str]:
    """Decode, scale and check one field. Returns (value, unit, quality, status)."""
    unit = spec.unit or QUANTITIES[spec.quantity].unit
    if spec.table in ("coil", "discrete"):
        return bool(words[0]), unit, Quality.GOOD, "ok"
    raw = decode_registers([int(w) for w in words], spec.type, spec.order, bit=spec.bit, mask=spec.mask)
    if isinstance(raw, str | bool):
        return raw, unit, Quality.GOOD, "ok"
    value: float | int = raw
    if spec.scale != 1.0 or spec.offset != 0.0:
        value = apply_scale(raw, spec.scale, spec.offset)
    converted = convert_to_canonical(spec.quantity, float(value), unit)
    if converted is not None and converted[1] != unit:
        value, unit = converted
    if isinstance(value, float) and not math.isfinite(value):
        return value, unit, Quality.BAD, "not_finite"
    if (spec.valid_min is not None and value < spec.valid_min) or (
        spec.valid_max is not None and value > spec.valid_max
    ):
        return value, unit, Quality.BAD, "out_of_range"
    return value, unit, Quality.GOOD, "ok"


# Merged tag sets and block decoders shared between devices (memory: a field of a device cost ~250 bytes).
_SHARED_MAX = 10_000
_TAGS: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
_BLOCKS: dict[tuple[ReadRequest, int], tuple[list[FieldSpec], BlockDecoder]] = {}


def _merged_tags(device_tags: Mapping[str, str], field_tags: Mapping[str, str]) -> Mapping[str, str]:
    """The field's tags over the device's, as one immutable mapping shared by every field with the same set."""
    if not device_tags and not field_tags:
        return EMPTY_TAGS
    merged = {**device_tags, **field_tags}
    key = tuple(merged.items())
    hit = _TAGS.get(key)
    if hit is None:
        if len(_TAGS) >= _SHARED_MAX:
            _TAGS.clear()
        hit = _TAGS[key] = MappingProxyType(merged)
    return hit


@dataclass(frozen=True, slots=True)
class _DeviceLayout:
    """What a poll needs of a device's fields, shared by the devices of one profile with the same tags.

    Per device, a 500-field profile cost ~30 kB in these lists, tuples and pickers (their indexes above
    256 are int objects of their own): 3 MiB of a 100-meter gateway's RSS, for 100 identical copies."""

    fields: Sequence[FieldSpec]  # held: the cache is keyed by its id
    field_tags: list[Mapping[str, str]]  # each field's tags over the device's, merged once
    groups: list[TagGroup]
    quantities: list[str]
    units: list[str]
    # By the blocks that decoded (shared too, _BLOCKS): the whole plan on most polls, fewer when a request failed.
    assemblies: dict[tuple[BlockDecoder, ...], Assembly]


_LAYOUTS: dict[tuple[int, tuple[tuple[str, str], ...]], _DeviceLayout] = {}


def _device_layout(device: ResolvedDevice) -> _DeviceLayout:
    fields = device.fields  # one list per profile (devices.py): its identity names the profile's fields
    key = (id(fields), tuple(device.tags.items()))
    hit = _LAYOUTS.get(key)
    if hit is not None and hit.fields is fields:
        return hit
    field_tags = [_merged_tags(device.tags, spec.tags) for spec in fields]
    layout = _DeviceLayout(
        fields,
        field_tags,
        tag_groups(field_tags),
        [spec.quantity for spec in fields],
        [final_unit(spec)[0] for spec in fields],
        {},
    )
    if len(_LAYOUTS) >= _SHARED_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[key] = layout
    return layout


class DevicePoller:
    def __init__(self, device: ResolvedDevice, bus: Bus, ctx: DriverContext) -> None:
        self.device = device
        self.bus = bus
        self.ctx = ctx
        self.plan: list[ReadRequest] = list(device.plan)
        layout = _device_layout(device)
        self.field_tags = layout.field_tags
        self.groups = layout.groups
        self.quantities = layout.quantities
        self.units = layout.units
        # By the request's identity (the plan holds it): hashing a request hashes its tuple of field indexes.
        self._blocks: dict[int, tuple[ReadRequest, BlockDecoder]] = {}
        self._assemblies = layout.assemblies

    def _block(self, req: ReadRequest) -> BlockDecoder:
        hit = self._blocks.get(id(req))
        if hit is not None and hit[0] is req:
            return hit[1]
        # Shared by the devices of one profile (they share its fields list, devices.py): a decoder
        # depends only on the request and the fields.
        fields = self.device.fields
        key = (req, id(fields))
        shared = _BLOCKS.get(key)
        if shared is not None and shared[0] is fields:
            block = shared[1]
        else:
            block = BlockDecoder(req, fields, self.device.spans)
            if len(_BLOCKS) >= _SHARED_MAX:
                _BLOCKS.clear()
            _BLOCKS[key] = (fields, block)
        self._blocks[id(req)] = (req, block)
        return block

    async def poll(self, ts_ns: int, *, probe_only: bool = False, detail: bool = False) -> PollResult:
        """Read every field once. Raises ``BusUnavailable`` when the bus itself is gone.

        ``probe_only`` (used while a device is down) stops after the first
        unanswered request, so a dead device costs one timeout, not one per request.
        ``detail`` decodes field by field and fills ``fields`` (raw words, status) for ``gateway modbus probe``.
        """
        dev = self.device
        result = PollResult(answered=False)
        results: dict[int, FieldResult] = {}
        decoded: list[Decoded] = []
        queue = list(self.plan)
        new_plan: list[ReadRequest] = []
        in_bulk = not detail  # every block that answered was decoded in bulk
        while queue:
            req = queue.pop(0)
            result.requests += 1
            try:
                words = await self.bus.read_block(
                    req.table, dev.unit_id, req.address, req.count, timeout=dev.timeout_s, retries=dev.retries
                )
            except BusUnavailable:
                raise
            except ExceptionResponse as exc:
                result.answered = True
                if exc.code in SPLIT_CODES and len(split := split_request(req, dev.spans)) > 1:
                    self.ctx.logger.warning(
                        "device %s refused %s %d..%d (%s); reading its fields one by one from now on",
                        dev.name, req.table, req.address, req.end - 1, exc,
                    )  # fmt: skip
                    self.ctx.count_error("request_split", dev.name)
                    queue[:0] = split
                    continue
                self.ctx.count_error(exc.kind, dev.name)
                new_plan.append(req)
                if detail:
                    for i in req.fields:
                        results[i] = FieldResult(dev.fields[i], status=f"exception {exc.code}")
                continue
            except ModbusTransportError as exc:
                self.ctx.count_error(exc.kind, dev.name)
                new_plan.append(req)
                if detail:
                    for i in req.fields:
                        results[i] = FieldResult(dev.fields[i], status=exc.kind)
                result.failure = str(exc)
                if probe_only or not result.answered:
                    # The first request went unanswered: treat the device as
                    # silent and spare the bus the rest of its plan.
                    new_plan.extend(queue)
                    if detail:
                        for q in queue:
                            for i in q.fields:
                                results[i] = FieldResult(dev.fields[i], status="skipped")
                    break
                continue
            result.answered = True
            new_plan.append(req)
            block = None if detail else self._block(req)
            out = None if block is None else block.decode(words)
            if block is None or out is None:  # probe detail, or words that do not decode in bulk
                in_bulk = False
                as_list = words_of(words) if isinstance(words, bytes) else words
                for i in req.fields:
                    results[i] = self._field(i, req, as_list)
                continue
            values, statuses = out
            if statuses is not None:
                for status in statuses:
                    if status != "ok":
                        self.ctx.count_error(status, dev.name)
            decoded.append((block, values, statuses))
        self.plan = new_plan
        if in_bulk:
            result.frames, result.values = self._frames(ts_ns, decoded)
        else:
            result.frames = self._partial_frames(ts_ns, decoded, results)
            result.values = sum(len(f.values) for f in result.frames)
        if detail:
            result.fields = [results[i] for i in sorted(results)]
        return result

    def _frames(self, ts_ns: int, decoded: list[Decoded]) -> tuple[list[Frame], int]:
        """Every block that answered decoded in bulk: an assembly cached per set of blocks, no per-value work."""
        blocks = tuple(b for b, _, _ in decoded)
        assembly = self._assemblies.get(blocks)
        if assembly is None:
            if len(self._assemblies) >= 64:  # requests failing in ever new combinations: stay bounded
                self._assemblies.clear()
            assembly = self._assemblies[blocks] = Assembly(blocks, self.groups, self.units, self.quantities)
        values: tuple[Value, ...] = ()
        for _, block_values, _ in decoded:
            values += block_values
        qualities = None
        if any(statuses is not None for _, _, statuses in decoded):
            qualities = tuple(
                Quality.GOOD if status == "ok" else Quality.BAD
                for block, _, statuses in decoded
                for status in (statuses or ("ok",) * len(block.indexes))
            )
        frames = assembly.build(ts_ns, self.ctx.site, self.ctx.gateway, self.device.name, values, qualities)
        return frames, assembly.values

    def _partial_frames(
        self,
        ts_ns: int,
        decoded: list[Decoded],
        results: dict[int, FieldResult],
    ) -> list[Frame]:
        """Some fields decoded one by one (probe detail, words that do not fit): a layout for this poll's fields."""
        got: dict[int, tuple[Value, str, Quality]] = {}
        for block, values, statuses in decoded:
            for k, (i, value) in enumerate(zip(block.indexes, values, strict=True)):
                bad = statuses is not None and statuses[k] != "ok"
                got[i] = (value, block.units[k], Quality.BAD if bad else Quality.GOOD)
        for i, r in results.items():
            if r.value is not None:
                got[i] = (r.value, r.unit, r.quality)
        frames = []
        for group in self.groups:
            present = [i for i in group.indexes if i in got]
            if not present:
                continue
            quals = tuple(got[i][2] for i in present)
            frames.append(
                Frame(
                    ts_ns,
                    self.ctx.site,
                    self.ctx.gateway,
                    self.device.name,
                    FrameFields.of([self.quantities[i] for i in present], [got[i][1] for i in present]),
                    tuple(got[i][0] for i in present),
                    group.tags,
                    None if quals.count(Quality.GOOD) == len(quals) else quals,
                )
            )
        return frames

    def _field(self, i: int, req: ReadRequest, words: list[int] | list[bool]) -> FieldResult:
        dev = self.device
        spec = dev.fields[i]
        span = dev.spans[i]
        raw = words[span.address - req.address : span.address - req.address + span.count]
        out = FieldResult(spec, raw=list(raw))
        try:
            value, unit, quality, status = field_value(spec, raw)
        except DecodeError as exc:
            self.ctx.count_error("decode_error", dev.name)
            out.status = f"decode_error: {exc}"
            return out
        if status != "ok":
            self.ctx.count_error(status, dev.name)
        out.value, out.unit, out.quality, out.status = value, unit, quality, status
        return out
