"""Payload codecs: raw LoRa payload bytes -> canonical measurements.

A codec is a class registered under the ``gateway.codecs`` entry point group
(third-party codecs are a pip package away), constructed once per device with
its options (from the device profile or the source config) and called for each
uplink. Codecs are pure: no I/O, no clock, no logging; they report what they
could not decode as ``problems`` (error kinds) so the driver can count them and
still keep the fields that did decode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from gateway import plugins
from gateway.model import Value


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded value. ``channel`` (Cayenne channel, probe index) becomes a tag."""

    quantity: str
    value: Value
    unit: str
    channel: str | None = None


@dataclass(slots=True)
class DecodeResult:
    values: list[Measurement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # error kinds, e.g. "truncated_payload"

    def add(self, quantity: str, value: Value, unit: str, channel: str | None = None) -> None:
        self.values.append(Measurement(quantity, value, unit, channel))


@runtime_checkable
class Codec(Protocol):
    name: ClassVar[str]

    def decode(self, payload: bytes, f_port: int) -> DecodeResult: ...


class CodecConfigError(ValueError):
    """Options given to a codec are wrong; raised at config validation time."""


def codec_class(name: str) -> type[Any]:
    """The codec class registered as ``name``; ``plugins.PluginError`` lists the available ones."""
    return plugins.load(plugins.CODECS, name)  # type: ignore[no-any-return]


def make_codec(name: str, options: Mapping[str, Any] | None = None) -> Codec:
    cls = codec_class(name)
    codec = cls(dict(options or {}))
    if not isinstance(codec, Codec):
        raise CodecConfigError(f"codec {name!r} does not implement decode(payload, f_port)")
    return codec


def available() -> list[str]:
    return plugins.names(plugins.CODECS)
