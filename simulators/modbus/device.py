"""A simulated Modbus device: a profile's fields filled with plausible, changing values."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.drivers.modbus.config import FieldSpec
from gateway.drivers.modbus.decode import encode_value
from gateway.quantities import QUANTITIES, convert_to_canonical

# (typical value, swing) in the canonical unit; the value follows a slow sine.
_PLAUSIBLE: dict[str, tuple[float, float]] = {
    "temperature": (21.0, 4.0),
    "relative_humidity": (55.0, 10.0),
    "pressure": (1013.0, 5.0),
    "dew_point": (11.0, 3.0),
    "voltage": (230.0, 3.0),
    "current": (5.0, 2.0),
    "active_power": (1150.0, 400.0),
    "reactive_power": (120.0, 40.0),
    "apparent_power": (1200.0, 400.0),
    "power_factor": (0.95, 0.03),
    "phase_angle": (15.0, 5.0),
    "frequency": (50.0, 0.05),
    "co2": (600.0, 150.0),
    "illuminance": (500.0, 300.0),
    "wind_speed": (4.0, 3.0),
    "wind_direction": (180.0, 90.0),
    "solar_irradiance": (400.0, 300.0),
}
# Cumulative quantities grow from a start value at a rate per second.
_COUNTERS: dict[str, tuple[float, float]] = {
    "energy_import": (12345.0, 0.0003),
    "energy_export": (321.0, 0.00005),
    "energy_total": (12666.0, 0.00035),
    "reactive_energy_import": (456.0, 0.00003),
    "reactive_energy_export": (78.0, 0.00001),
    "pulse_count": (1000.0, 0.5),
    "water_volume": (42.0, 0.0001),
    "uptime": (0.0, 1.0),
    "sequence": (0.0, 1.0),
}


def plausible_value(spec: FieldSpec, t: float, phase: float = 0.0) -> float | bool | str:
    """The value a device with this field would show at time ``t`` (canonical unit)."""
    if spec.type == "string":
        return "SIM-" + spec.quantity.upper()[: spec.length * 2 - 4]
    if spec.type == "bool" or spec.bit is not None:
        return int(t / 7 + phase) % 2 == 1
    if spec.quantity in _COUNTERS:
        start, rate = _COUNTERS[spec.quantity]
        return start + rate * t
    base, swing = _PLAUSIBLE.get(spec.quantity, (_midpoint(spec), 1.0))
    value = base + swing * math.sin(2 * math.pi * t / 300.0 + phase)
    if spec.valid_min is not None:
        value = max(value, spec.valid_min)
    if spec.valid_max is not None:
        value = min(value, spec.valid_max)
    return value


def _midpoint(spec: FieldSpec) -> float:
    if spec.valid_min is not None and spec.valid_max is not None:
        return (spec.valid_min + spec.valid_max) / 2
    return 10.0


def field_registers(spec: FieldSpec, value: float | bool | str) -> list[int]:
    """Engineering value -> the raw registers the device would hold."""
    if isinstance(value, str):
        return encode_value(value, "string", spec.order, length=spec.length)
    if isinstance(value, bool):
        if spec.bit is not None:
            return encode_value(1 << spec.bit if value else 0, spec.type, spec.order)
        return encode_value(value, "bool", spec.order)
    unit = spec.unit or QUANTITIES[spec.quantity].unit
    # the driver converts device units to canonical; the device holds its own unit
    factor = convert_to_canonical(spec.quantity, 1.0, unit)
    device_value = value / factor[0] if factor and factor[0] else value
    raw = (device_value - spec.offset) / spec.scale if spec.scale else device_value
    if spec.type in ("float32", "float64"):
        return encode_value(raw, spec.type, spec.order)
    lo, hi = _INT_RANGES[spec.type]
    integer = max(lo, min(hi, round(raw)))
    if spec.mask is not None:
        shift = (spec.mask & -spec.mask).bit_length() - 1
        integer = (integer << shift) & spec.mask
    return encode_value(integer, spec.type, spec.order)


_INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@dataclass
class SimulatedDevice:
    """Registers of one unit. ``fixed`` pins raw registers (golden tests); the rest move with time."""

    unit_id: int
    fields: Sequence[FieldSpec]
    fixed: dict[str, dict[int, int]] = field(default_factory=dict)  # table -> address -> word
    strict_addresses: bool = False  # True: reading a hole answers "illegal data address"
    started: float = field(default_factory=time.time)
    frozen_at: float | None = None  # fix the clock (reproducible values)

    def pin_random(self, seed: int, *, registers: int, bits: int) -> None:
        """Pin random words to the first ``registers`` holding and input registers and random bits to the first
        ``bits`` coils and discrete inputs (tests that compare two clients reading the same unit)."""
        rng = random.Random(seed)
        self.fixed = {table: {a: rng.randrange(0x10000) for a in range(registers)} for table in ("holding", "input")}
        self.fixed |= {table: {a: rng.randrange(2) for a in range(bits)} for table in ("coil", "discrete")}

    def snapshot(self, table: str) -> Mapping[int, int]:
        """Current registers (or bits as 0/1) of one table."""
        t = (self.frozen_at if self.frozen_at is not None else time.time()) - self.started
        words: dict[int, int] = {}
        for i, spec in enumerate(self.fields):
            if spec.table != table:
                continue
            value = plausible_value(spec, t, phase=self.unit_id * 0.7 + i * 0.3)
            regs = [int(bool(value))] if table in ("coil", "discrete") else field_registers(spec, value)
            for k, w in enumerate(regs):
                words[spec.address + k] = words.get(spec.address + k, 0) | w
        words.update(self.fixed.get(table, {}))
        return words

    def read(self, table: str, address: int, count: int) -> list[int] | None:
        """Words for a read, or None when ``strict_addresses`` and the range touches a hole."""
        words = self.snapshot(table)
        if self.strict_addresses and any(a not in words for a in range(address, address + count)):
            return None
        return [words.get(a, 0) for a in range(address, address + count)]


def devices_from_profiles(
    units: Mapping[int, str], *, profile_dirs: list[Path] | None = None, strict_addresses: bool = False
) -> dict[int, SimulatedDevice]:
    """unit id -> profile name  =>  unit id -> simulated device (profile errors raise DeviceSetupError)."""
    from gateway.drivers.modbus.devices import load_profile_model  # driver-side validation of the same file

    out: dict[int, SimulatedDevice] = {}
    for unit, name in units.items():
        _path, profile = load_profile_model(name, profile_dirs)
        out[unit] = SimulatedDevice(unit, list(profile.registers), strict_addresses=strict_addresses)
    return out
