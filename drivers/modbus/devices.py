"""Resolve each configured device: profile + inline registers -> fields and a read plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.drivers.modbus.config import (
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    DeviceConfig,
    FieldSpec,
    ModbusSourceConfig,
    ProfileModel,
)
from gateway.drivers.modbus.planner import PlanError, ReadRequest, Span, plan_requests
from pydantic import ValidationError

from gateway.config import key_path
from gateway.profiles import ProfileError, load_profile


class DeviceSetupError(ValueError):
    """A device's profile or registers cannot be used; the message names the device and key."""


@dataclass(slots=True)
class ResolvedDevice:
    name: str
    unit_id: int
    fields: list[FieldSpec]
    plan: list[ReadRequest]
    interval_s: float
    timeout_s: float
    retries: int
    tags: dict[str, str]
    profile_path: Path | None = None
    spans: list[Span] = field(default_factory=list)


def load_profile_model(name: str, extra_dirs: list[Path] | None = None) -> tuple[Path, ProfileModel]:
    """Find and validate a profile; errors carry the file path and the key path."""
    try:
        path, raw = load_profile(name, extra_dirs)
    except ProfileError as exc:
        raise DeviceSetupError(str(exc)) from exc
    try:
        return path, ProfileModel.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {key_path(tuple(e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise DeviceSetupError("\n".join(lines)) from exc


def resolve_device(dev: DeviceConfig, src: ModbusSourceConfig, index: int) -> ResolvedDevice:
    where = f"devices[{index}] ({dev.name})"
    fields: list[FieldSpec] = []
    profile: ProfileModel | None = None
    path: Path | None = None
    if dev.profile:
        try:
            path, profile = load_profile_model(dev.profile, list(src.profile_dirs))
        except DeviceSetupError as exc:
            raise DeviceSetupError(f"{where}.profile: {exc}") from exc
        fields.extend(profile.registers)
    fields.extend(dev.registers)

    def pick(device_value: int | None, profile_value: int | None, default: int) -> int:
        if device_value is not None:
            return device_value
        return profile_value if profile_value is not None else default

    max_regs = pick(
        dev.max_registers_per_read, profile.max_registers_per_read if profile else None, MAX_REGISTERS_PER_READ
    )
    max_bits = pick(dev.max_bits_per_read, profile.max_bits_per_read if profile else None, MAX_BITS_PER_READ)
    max_gap = pick(dev.max_gap, profile.max_gap if profile else None, src.max_gap)
    spans = [Span(f.table, f.address, f.span) for f in fields]
    try:
        plan = plan_requests(spans, max_registers=max_regs, max_bits=max_bits, max_gap=max_gap)
    except PlanError as exc:
        raise DeviceSetupError(f"{where}: {exc}; lower the field sizes or raise max_registers_per_read") from exc
    return ResolvedDevice(
        name=dev.name,
        unit_id=dev.unit_id,
        fields=fields,
        plan=plan,
        interval_s=dev.interval or src.interval,
        timeout_s=dev.timeout or src.timeout,
        retries=src.retries if dev.retries is None else dev.retries,
        tags={**src.tags, **dev.tags},
        profile_path=path,
        spans=spans,
    )


def resolve_devices(src: ModbusSourceConfig) -> list[ResolvedDevice]:
    """All devices of a source; every problem is reported at once."""
    out: list[ResolvedDevice] = []
    problems: list[str] = []
    for i, dev in enumerate(src.devices):
        try:
            out.append(resolve_device(dev, src, i))
        except DeviceSetupError as exc:
            problems.append(str(exc))
    if problems:
        raise DeviceSetupError("\n".join(problems))
    return out


__all__ = ["DeviceSetupError", "ResolvedDevice", "load_profile_model", "resolve_device", "resolve_devices"]
