"""Resolve each configured device: profile + inline registers -> fields and a read plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from gateway.config import key_path
from gateway.config_messages import problems_from_validation
from gateway.config_types import ConfigValueError, ConfigValueErrors
from gateway.drivers.modbus.config import (
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    DeviceConfig,
    FieldSpec,
    ModbusSourceConfig,
    ProfileModel,
)
from gateway.drivers.modbus.planner import PlanError, ReadRequest, Span, plan_requests
from gateway.profiles import ProfileError, find_profile, list_profiles, load_profile


class DeviceSetupError(ConfigValueError):
    """A device's profile or registers cannot be used; ``loc`` is the key below the source."""

    def __init__(self, message: str, loc: tuple[int | str, ...] = ()) -> None:
        super().__init__(loc, message)

    def __str__(self) -> str:
        return f"{key_path(self.loc)}: {self.message}" if self.loc else self.message


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


# Validated profiles by file and version: a profile is parsed and validated once, not once per device and per
# step (the config check, the routing catalogue and the driver's start each resolve every device: 100
# endpoints with a 500-register profile took 16 s of TOML parsing before the first poll).
_MODELS: dict[tuple[str, int, int], tuple[Path, ProfileModel]] = {}
_MODELS_MAX = 256
# Fields, spans and read plan of a profile by (id of its model, max registers, max bits, max gap); the entry
# holds the model, so its id is not reused while the entry lives.
_PLANS: dict[tuple[int, int, int, int], tuple[ProfileModel, list[FieldSpec], list[Span], list[ReadRequest]]] = {}


def _version(name: str, extra_dirs: list[Path] | None) -> tuple[str, int, int] | None:
    try:
        path = find_profile(name, extra_dirs)
        stat = path.stat()
    except (ProfileError, OSError):
        return None  # load_profile below says what is wrong
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def load_profile_model(name: str, extra_dirs: list[Path] | None = None) -> tuple[Path, ProfileModel]:
    """Find and validate a profile; errors carry the file path and the key path. Cached while the file is
    unchanged (its modification time and size): a reload after an edit reads it again."""
    version = _version(name, extra_dirs)
    hit = _MODELS.get(version) if version is not None else None
    if hit is not None:
        return hit
    path, model = _load_profile_model(name, extra_dirs)
    if version is not None:
        if len(_MODELS) >= _MODELS_MAX:
            _MODELS.clear()
        _MODELS[version] = (path, model)
    return path, model


def _load_profile_model(name: str, extra_dirs: list[Path] | None) -> tuple[Path, ProfileModel]:
    try:
        path, raw = load_profile(name, extra_dirs)
    except ProfileError as exc:
        raise DeviceSetupError(str(exc)) from exc
    if "registers" not in raw and ("decoder" in raw or "codec" in raw):
        kind = "serial" if "decoder" in raw else "LoRa"
        raise DeviceSetupError(
            f"{name!r} ({path}) is a {kind} device profile, not a Modbus one; a Modbus device needs a profile "
            f"with [[registers]], e.g. {', '.join(modbus_profiles(extra_dirs)) or 'eastron-sdm630'}"
        )
    try:
        return path, ProfileModel.model_validate(raw)
    except ValidationError as exc:
        problems = problems_from_validation(exc, ProfileModel)
        raise DeviceSetupError("; ".join(f"{path}: {p}" for p in problems)) from exc


def modbus_profiles(extra_dirs: list[Path] | None = None) -> list[str]:
    """Names of the profiles that describe Modbus devices (they have registers)."""
    names = []
    for name in list_profiles(extra_dirs):
        try:
            _, raw = load_profile(name, extra_dirs)
        except ProfileError:
            continue
        if "registers" in raw:
            names.append(name)
    return names


def resolve_device(dev: DeviceConfig, src: ModbusSourceConfig, index: int) -> ResolvedDevice:
    fields: list[FieldSpec] = []
    profile: ProfileModel | None = None
    path: Path | None = None
    if dev.profile:
        try:
            path, profile = load_profile_model(dev.profile, list(src.profile_dirs))
        except DeviceSetupError as exc:
            raise DeviceSetupError(exc.message, ("devices", index, "profile")) from exc
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
    shared = _PLANS.get((id(profile), max_regs, max_bits, max_gap)) if profile and not dev.registers else None
    if shared is not None and shared[0] is profile:
        # Devices of one profile share its fields, spans and plan (read-only), and so do their pollers'
        # decoders: per field and per device they cost ~250 bytes, 25 MB for 100 meters of 1000 registers.
        fields, spans, plan = shared[1], shared[2], shared[3]
    else:
        spans = [Span(f.table, f.address, f.span) for f in fields]
        try:
            plan = plan_requests(spans, max_registers=max_regs, max_bits=max_bits, max_gap=max_gap)
        except PlanError as exc:
            raise DeviceSetupError(
                f"{dev.name}: {exc}; lower the field sizes or raise max_registers_per_read", ("devices", index)
            ) from exc
        if profile is not None and not dev.registers:
            if len(_PLANS) >= _MODELS_MAX:
                _PLANS.clear()
            _PLANS[id(profile), max_regs, max_bits, max_gap] = (profile, fields, spans, plan)
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
    problems: list[ConfigValueError] = []
    for i, dev in enumerate(src.devices):
        try:
            out.append(resolve_device(dev, src, i))
        except DeviceSetupError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DeviceSetupErrors(problems)
    return out


class DeviceSetupErrors(DeviceSetupError, ConfigValueErrors):
    """Every device problem of one source."""

    def __init__(self, errors: list[ConfigValueError]) -> None:
        ConfigValueErrors.__init__(self, errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


__all__ = [
    "DeviceSetupError",
    "DeviceSetupErrors",
    "ResolvedDevice",
    "load_profile_model",
    "modbus_profiles",
    "resolve_device",
    "resolve_devices",
]
