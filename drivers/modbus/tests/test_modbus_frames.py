"""The poller's frames, decoded in bulk, equal what the per-field reference (``field_value``) makes of the same words.

Golden comparison over every Modbus profile in config/profiles/ against the simulator, and a Hypothesis
comparison over a synthetic device with every type, order, bit, mask, string, coil, scale, unit alias, range
and overlap, on random words.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.drivers.modbus.bus import Bus
from gateway.drivers.modbus.config import FieldSpec, ModbusSourceConfig
from gateway.drivers.modbus.decode import DecodeError
from gateway.drivers.modbus.decode_plan import BlockDecoder
from gateway.drivers.modbus.devices import modbus_profiles, resolve_device
from gateway.drivers.modbus.planner import Span, plan_requests
from gateway.drivers.modbus.poller import DevicePoller, field_value
from gateway.drivers.modbus.words import words_of
from gateway.frame import Frame, as_readings
from gateway.model import Quality, Reading, make_reading
from gateway.simulators.modbus.device import devices_from_profiles
from gateway.simulators.modbus.harness import make_context
from gateway.simulators.modbus.server import ModbusSimulator

Answers = dict[tuple[str, int, int], list[int] | list[bool]]


class RecordingBus:
    """A real bus that remembers the words of each answer, so the reference can decode the very same words."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.answers: Answers = {}

    async def read(self, table: str, unit: int, address: int, count: int, **kw: Any) -> list[int] | list[bool]:
        words = await self.bus.read(table, unit, address, count, **kw)
        self.answers[(table, address, count)] = list(words)
        return words

    async def read_block(self, table: str, unit: int, address: int, count: int, **kw: Any) -> bytes | list[bool]:
        block = await self.bus.read_block(table, unit, address, count, **kw)
        self.answers[(table, address, count)] = words_of(block) if isinstance(block, bytes) else list(block)
        return block


def _reference(poller: DevicePoller, answers: Answers, ts: int) -> list[Reading]:
    """What the per-field poller made of these words: one Reading per field, ``field_value`` each."""
    dev = poller.device
    out = []
    for req in poller.plan:
        words = answers.get((req.table, req.address, req.count))
        if words is None:  # the request failed: its fields are lost for the poll
            continue
        for i in req.fields:
            span = dev.spans[i]
            raw = words[span.address - req.address : span.address - req.address + span.count]
            try:
                value, unit, quality, _ = field_value(dev.fields[i], raw)
            except DecodeError:
                continue
            out.append(make_reading(ts, "s", "g", dev.name, dev.fields[i].quantity, value, unit,
                                    poller.field_tags[i], quality))  # fmt: skip
    return out


def _key(r: Reading) -> tuple[Any, ...]:
    value = r.value
    # NaN != NaN: compare floats by their bits
    bits = struct.pack(">d", value) if type(value) is float else value
    return (r.device, r.quantity, tuple(sorted(r.tags.items())), r.unit, type(value).__name__, bits, r.quality)


@pytest.mark.parametrize("profile", modbus_profiles())
async def test_frames_equal_per_field_readings_for_every_profile(profile: str) -> None:
    sim = ModbusSimulator(devices_from_profiles({1: profile}), seed=3)
    port = await sim.serve_tcp()
    cfg = ModbusSourceConfig.model_validate({
        "driver": "modbus", "name": "bus", "host": "127.0.0.1", "port": port, "timeout": 1.0,
        "devices": [{"name": "d", "unit_id": 1, "profile": profile, "tags": {"room": "r1"}}],
    })  # fmt: skip
    bus = Bus(cfg)
    try:
        await bus.connect()
        recording = RecordingBus(bus)
        poller = DevicePoller(resolve_device(cfg.devices[0], cfg, 0), recording, make_context())  # type: ignore[arg-type]
        result = await poller.poll(1_700_000_000_000_000_000)
        recording_detail = RecordingBus(bus)
        detail = await DevicePoller(poller.device, recording_detail, make_context()).poll(  # type: ignore[arg-type]
            1_700_000_000_000_000_000, detail=True
        )
    finally:
        bus.close()
        await sim.close()
    assert result.frames and all(type(f) is Frame for f in result.frames)
    got = sorted(map(_key, as_readings(result.frames)))
    assert got == sorted(map(_key, _reference(poller, recording.answers, 1_700_000_000_000_000_000)))
    assert result.values == len(got) == len(poller.device.fields)
    # one frame per tag set, not per field
    assert len(result.frames) == len({tuple(sorted(t.items())) for t in poller.field_tags})
    # the probe's field-by-field path makes the same frames
    assert sorted(map(_key, as_readings(detail.frames))) == sorted(
        map(_key, _reference(poller, recording_detail.answers, 1_700_000_000_000_000_000))
    )
    assert [f.status for f in detail.fields] == ["ok"] * len(got)
    for f in result.frames:  # all-float frames travel as array('d'): 8 bytes a value instead of 32
        assert (type(f.values) is array) == all(type(v) is float for v in f.values), f


# --- a synthetic device with every decoding feature, random words --------------------------------------------

_SPECS: list[dict[str, Any]] = [
    {"quantity": "temperature", "address": 0, "type": "int16", "scale": 0.1},
    {"quantity": "temperature", "address": 1, "type": "uint16", "valid_min": 100, "valid_max": 60000},
    {"quantity": "voltage", "address": 2, "type": "float32", "order": "CDAB", "valid_min": 0, "valid_max": 500},
    {"quantity": "voltage", "address": 4, "type": "float32", "order": "BADC"},
    {"quantity": "voltage", "address": 6, "type": "float32", "order": "DCBA", "tags": {"phase": "L2"}},
    {"quantity": "active_power", "address": 8, "type": "float32", "unit": "kW"},
    {
        "quantity": "active_power",
        "address": 10,
        "type": "int32",
        "unit": "kW",
        "scale": 0.5,
        "offset": -3.0,
        "tags": {"phase": "L1"},
    },
    {"quantity": "energy_import", "address": 12, "type": "uint64", "order": "CDAB", "unit": "Wh"},
    {"quantity": "energy_import", "address": 16, "type": "int64", "order": "BADC", "tags": {"phase": "L1"}},
    {"quantity": "energy_export", "address": 20, "type": "float64", "order": "DCBA", "valid_max": 1e6},
    {"quantity": "energy_export", "address": 24, "type": "float64"},
    {"quantity": "uptime", "address": 28, "type": "uint32", "order": "CDAB"},
    {"quantity": "status", "address": 30, "type": "uint16", "bit": 3},
    {"quantity": "status", "address": 30, "type": "uint16", "mask": 0x0F00, "tags": {"part": "mode"}},
    {"quantity": "status", "address": 30, "type": "bool", "tags": {"part": "any"}},
    {"quantity": "status", "address": 31, "type": "int32", "order": "DCBA", "bit": 17, "tags": {"part": "b"}},
    {"quantity": "frequency", "address": 40, "type": "int16", "order": "BADC", "scale": 0.01, "offset": 45},
    {"quantity": "status", "address": 41, "type": "string", "length": 3, "order": "BADC", "tags": {"part": "s"}},
    {"quantity": "status", "address": 44, "type": "string", "length": 2},
    {"quantity": "pulse_count", "table": "input", "address": 0, "type": "int32", "mask": 0xFF00, "scale": 2.0},
    {"quantity": "pulse_count", "table": "input", "address": 2, "type": "uint16", "valid_min": 5},
    {"quantity": "status", "table": "coil", "address": 0, "type": "bool", "tags": {"part": "c0"}},
    {"quantity": "status", "table": "coil", "address": 3, "type": "bool", "tags": {"part": "c3"}},
    {"quantity": "status", "table": "discrete", "address": 7, "type": "bool"},
]


# Scaled without an offset: whether "+ 0.0" may be skipped (it turns -0.0 into 0.0, as field_value does)
_NO_OFFSET: list[dict[str, Any]] = [
    {"quantity": "current", "address": 0, "type": "float32", "scale": 2.0},
    {"quantity": "current", "address": 2, "type": "int16", "scale": -0.5, "tags": {"phase": "L3"}},
    {"quantity": "current", "address": 3, "type": "uint16", "scale": 0.01, "tags": {"phase": "L2"}},
]


def _device(max_gap: int, specs: list[dict[str, Any]] = _SPECS) -> tuple[list[FieldSpec], list[Span], list[Any]]:
    fields = [FieldSpec.model_validate(s) for s in specs]
    spans = [Span(f.table, f.address, f.span) for f in fields]
    return fields, spans, plan_requests(spans, max_registers=125, max_gap=max_gap)


def _reference_block(fields: Sequence[FieldSpec], spans: Sequence[Span], req: Any, words: Sequence[Any]) -> list[Any]:
    out = []
    for i in req.fields:
        raw = words[spans[i].address - req.address : spans[i].address - req.address + spans[i].count]
        value, unit, quality, status = field_value(fields[i], raw)
        out.append((value, unit, quality, status))
    return out


def _same(a: Any, b: Any) -> bool:
    if type(a) is float and type(b) is float:  # bit for bit: NaN is NaN, -0.0 is not 0.0
        return struct.pack(">d", a) == struct.pack(">d", b) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(data=st.data(), max_gap=st.sampled_from([0, 8, 20]))
def test_block_decoder_equals_field_value(data: st.DataObject, max_gap: int) -> None:
    fields, spans, plan = _device(max_gap)
    for req in plan:
        if req.table in ("coil", "discrete"):
            words: list[Any] = data.draw(st.lists(st.booleans(), min_size=req.count, max_size=req.count + 7))
        else:
            words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=req.count, max_size=req.count))
        _check_block(fields, spans, req, words)


@pytest.mark.parametrize("specs", [_SPECS, _NO_OFFSET], ids=["every_feature", "no_offset"])
@pytest.mark.parametrize("word", [0, 0x8000, 0xFFFF, 0x7F80])  # zeros (and -0.0), sign bits, NaN, inf
def test_block_decoder_equals_field_value_on_edge_words(word: int, specs: list[dict[str, Any]]) -> None:
    fields, spans, plan = _device(8, specs)
    for req in plan:
        _check_block(
            fields, spans, req, [bool(word)] * req.count if req.table in ("coil", "discrete") else [word] * req.count
        )


def _check_block(fields: list[FieldSpec], spans: list[Span], req: Any, words: list[Any]) -> None:
    block = BlockDecoder(req, fields, spans)
    decoded = block.decode(words)
    assert decoded is not None
    values, statuses = decoded
    expected = _reference_block(fields, spans, req, words)
    assert len(values) == len(expected)
    for k, (value, (ref_value, ref_unit, ref_quality, ref_status)) in enumerate(zip(values, expected, strict=True)):
        assert _same(value, ref_value), (fields[req.fields[k]], value, ref_value)
        assert block.units[k] == ref_unit
        status = "ok" if statuses is None else statuses[k]
        assert status == ref_status
        assert (Quality.GOOD if status == "ok" else Quality.BAD) == ref_quality
    if not block.bits:  # the same words as the bytes Bus.read_block hands over: the same result
        from_bytes = block.decode(struct.pack(f">{len(words)}H", *words))
        assert from_bytes is not None
        assert all(map(_same, from_bytes[0], values)) and from_bytes[1] == statuses


@pytest.mark.parametrize(("scale", "word", "text"), [(0.01, 23017, "230.17"), (0.1, 3, "0.3"), (0.001, 1234, "1.234")])
def test_a_decimal_scale_gives_the_decimal_in_both_paths(scale: float, word: int, text: str) -> None:
    # raw * 0.01 would give 230.17000000000002 (and 0.30000000000000004): digits that travel in every payload
    spec = FieldSpec(quantity="voltage", address=0, scale=scale)
    assert repr(field_value(spec, [word])[0]) == text
    fields, spans = [spec], [Span("holding", 0, 1)]
    block = BlockDecoder(plan_requests(spans, max_registers=125, max_gap=0)[0], fields, spans)
    decoded = block.decode(struct.pack(">H", word))
    assert decoded is not None and repr(decoded[0][0]) == text


def test_a_decimal_scale_of_a_huge_int64_rounds_once_in_both_paths() -> None:
    # found by bench/fuzz.py: an int divided by a float is rounded twice (int -> float first), by an int once
    spec = FieldSpec(quantity="active_power", unit="kW", address=0, type="int64", scale=0.1, offset=-40.0)
    words = [0x0073, 0x0000, 0x0000, 0x0007]  # 2**54-ish: beyond a float's 53 bits
    fields, spans = [spec], [Span("holding", 0, 4)]
    block = BlockDecoder(plan_requests(spans, max_registers=125, max_gap=0)[0], fields, spans)
    decoded = block.decode(words)
    assert decoded is not None and decoded[0][0] == field_value(spec, words)[0]


def test_words_that_do_not_fit_fall_back_to_the_per_field_path() -> None:
    fields, spans, plan = _device(8)
    holding = next(r for r in plan if r.table == "holding")
    block = BlockDecoder(holding, fields, spans)
    assert block.decode([0] * holding.count) is not None
    assert block.decode([0x10000] + [0] * (holding.count - 1)) is None  # not a 16-bit word
    assert block.decode([0] * (holding.count - 1)) is None  # a short answer
    assert block.decode(bytes(2 * holding.count)) is not None
    assert block.decode(bytes(2 * holding.count - 2)) is None  # a short answer, as bytes


async def test_a_refused_field_is_absent_from_the_frames_and_the_rest_stays_in_bulk() -> None:
    devices = devices_from_profiles({4: "eastron-sdm630"})
    sim = ModbusSimulator(devices, seed=1)
    sim.fault(4).exception_addresses = {0x46}  # frequency refuses to be read: its coalesced request is split
    port = await sim.serve_tcp()
    cfg = ModbusSourceConfig.model_validate({
        "driver": "modbus", "name": "bus", "host": "127.0.0.1", "port": port, "timeout": 1.0,
        "devices": [{"name": "d", "unit_id": 4, "profile": "eastron-sdm630"}],
    })  # fmt: skip
    bus = Bus(cfg)
    try:
        await bus.connect()
        recording = RecordingBus(bus)
        poller = DevicePoller(resolve_device(cfg.devices[0], cfg, 0), recording, make_context())  # type: ignore[arg-type]
        polls = [await poller.poll(ts) for ts in (10**18, 10**18 + 10**9)]
    finally:
        bus.close()
        await sim.close()
    for result in polls:
        readings = as_readings(result.frames)
        assert len(readings) == result.values == len(poller.device.fields) - 1
        assert "frequency" not in {r.quantity for r in readings}
    # the second poll (split plan, one request failing) is decoded in bulk: one assembly per set of blocks
    answered = tuple(poller._block(r) for r in poller.plan if r.address != 0x46)
    assert answered in poller._assemblies
    assert sorted(map(_key, as_readings(polls[1].frames))) == sorted(
        map(_key, _reference(poller, recording.answers, 10**18 + 10**9))
    )
