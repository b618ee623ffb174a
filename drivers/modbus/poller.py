"""Poll one device once: run its read plan, decode fields, build readings.

A failed request loses only its own fields; a request the device refuses as a
whole (illegal address or value, typically a hole in a coalesced range) is
split into one request per field, for this poll and all later ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.driver import DriverContext
from gateway.drivers.modbus.bus import Bus, BusUnavailable, ExceptionResponse, ModbusTransportError
from gateway.drivers.modbus.config import FieldSpec
from gateway.drivers.modbus.decode import DecodeError, RegisterValue, decode_registers
from gateway.drivers.modbus.devices import ResolvedDevice
from gateway.drivers.modbus.planner import ReadRequest, split_request
from gateway.model import Quality, Reading
from gateway.quantities import QUANTITIES, convert_to_canonical
from gateway.tags import EMPTY_TAGS

SPLIT_CODES = (2, 3)  # illegal data address / value: the range, not the device, is the problem


@dataclass(slots=True)
class FieldResult:
    """What probe shows for one field: raw words, decoded value, status."""

    spec: FieldSpec
    raw: list[int] | list[bool] | None = None
    value: RegisterValue | None = None
    unit: str = ""
    status: str = "ok"
    reading: Reading | None = None


@dataclass(slots=True)
class PollResult:
    answered: bool  # at least one request got an answer (data or a Modbus exception)
    readings: list[Reading] = field(default_factory=list)
    fields: list[FieldResult] = field(default_factory=list)
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
        value = raw * spec.scale + spec.offset
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


class DevicePoller:
    def __init__(self, device: ResolvedDevice, bus: Bus, ctx: DriverContext) -> None:
        self.device = device
        self.bus = bus
        self.ctx = ctx
        self.plan: list[ReadRequest] = list(device.plan)
        # Each field's tags, merged once: one immutable mapping shared by every reading of the field, instead of
        # a new dict per reading (the tags caches downstream then recognise it by identity).
        self.field_tags: list[Mapping[str, str]] = [
            MappingProxyType({**device.tags, **spec.tags}) if device.tags or spec.tags else EMPTY_TAGS
            for spec in device.fields
        ]

    async def poll(self, ts_ns: int, *, probe_only: bool = False) -> PollResult:
        """Read every field once. Raises ``BusUnavailable`` when the bus itself is gone.

        ``probe_only`` (used while a device is down) stops after the first
        unanswered request, so a dead device costs one timeout, not one per request.
        """
        dev = self.device
        result = PollResult(answered=False)
        results: dict[int, FieldResult] = {}
        queue = list(self.plan)
        new_plan: list[ReadRequest] = []
        while queue:
            req = queue.pop(0)
            result.requests += 1
            try:
                words = await self.bus.read(
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
                for i in req.fields:
                    results[i] = FieldResult(dev.fields[i], status=f"exception {exc.code}")
                continue
            except ModbusTransportError as exc:
                self.ctx.count_error(exc.kind, dev.name)
                new_plan.append(req)
                for i in req.fields:
                    results[i] = FieldResult(dev.fields[i], status=exc.kind)
                result.failure = str(exc)
                if probe_only or not result.answered:
                    # The first request went unanswered: treat the device as
                    # silent and spare the bus the rest of its plan.
                    new_plan.extend(queue)
                    for q in queue:
                        for i in q.fields:
                            results[i] = FieldResult(dev.fields[i], status="skipped")
                    break
                continue
            result.answered = True
            new_plan.append(req)
            for i in req.fields:
                results[i] = self._field(i, req, words, ts_ns)
        self.plan = new_plan
        result.fields = [results[i] for i in sorted(results)]
        result.readings = [r.reading for r in result.fields if r.reading is not None]
        return result

    def _field(self, i: int, req: ReadRequest, words: list[int] | list[bool], ts_ns: int) -> FieldResult:
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
        out.value, out.unit, out.status = value, unit, status
        out.reading = self.ctx.reading(
            dev.name, spec.quantity, value, unit, ts_ns=ts_ns, tags=self.field_tags[i], quality=quality
        )
        return out
