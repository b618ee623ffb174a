"""Resolve which device an uplink belongs to and how its payload is decoded.

The codec is chosen per device (source config, else its profile), else per
fPort (``fport_codecs``), else ``default_codec``. Everything is built and
checked once, at validation, so a typo in a codec name or a profile stops
start-up with the key path instead of failing on the first uplink.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.drivers.lorawan.codecs import Codec, CodecConfigError, make_codec
from gateway.drivers.lorawan.config import DeviceConfig, DeviceProfile, LoRaWANConfig, ObjectField, profile_problem
from gateway.drivers.lorawan.events import DeviceIds
from pydantic import ValidationError

from gateway import plugins
from gateway.profiles import ProfileError, load_profile


@dataclass(slots=True)
class ResolvedDevice:
    name: str
    codec: Codec | None = None
    f_ports: frozenset[int] = frozenset()
    object_fields: Mapping[str, ObjectField] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


def _codec(name: str, options: Mapping[str, Any], where: str) -> Codec:
    try:
        return make_codec(name, options)
    except plugins.PluginError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    except CodecConfigError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _profile(name: str, where: str) -> DeviceProfile:
    try:
        path, raw = load_profile(name)
    except ProfileError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{where}: {profile_problem(path, exc)}") from exc


def _resolve(i: int, dev: DeviceConfig) -> ResolvedDevice:
    where = f"devices[{i}]"
    profile = _profile(dev.profile, f"{where}.profile") if dev.profile else DeviceProfile()
    codec_name = dev.codec or profile.codec
    options = dev.codec_options if dev.codec_options is not None else profile.codec_options
    codec = _codec(codec_name, options, f"{where}.codec") if codec_name else None
    return ResolvedDevice(
        name=dev.name or dev.id.lower(),
        codec=codec,
        f_ports=frozenset(profile.f_ports),
        object_fields=dev.object_fields if dev.object_fields is not None else profile.object_fields,
        tags=dev.tags,
    )


class DeviceTable:
    def __init__(self, config: LoRaWANConfig) -> None:
        self._config = config
        self._by_id = {dev.id.lower(): _resolve(i, dev) for i, dev in enumerate(config.devices)}
        self._port_codecs = {
            port: _codec(name, {}, f"fport_codecs.{port}") for port, name in config.fport_codecs.items()
        }
        self._default = _codec(config.default_codec, {}, "default_codec") if config.default_codec else None
        self._unknown: dict[str, ResolvedDevice] = {}

    def lookup(self, ids: DeviceIds) -> ResolvedDevice | None:
        """The configured device, or a generic one for unlisted devices (None if they are refused)."""
        for key in (ids.dev_eui, ids.device_id.lower()):
            if key and key in self._by_id:
                return self._by_id[key]
        if not self._config.accept_unknown_devices:
            return None
        name = ids.device_id if self._config.server == "ttn" else ids.dev_eui
        name = name or ids.key
        found = self._unknown.get(name)
        if found is None:
            found = self._unknown[name] = ResolvedDevice(name=name)
        return found

    def codec_for(self, device: ResolvedDevice, f_port: int) -> Codec | None:
        return device.codec or self._port_codecs.get(f_port) or self._default
