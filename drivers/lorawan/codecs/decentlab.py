"""Decentlab generic payload format, protocol version 2.

``[version=2][device_id:2][flags:2][words...]``, big-endian uint16 words; bit i
of ``flags`` says whether sensor group i is present, each group has a fixed
number of words (docs/protocols.md#3c-decentlab-protocol-version-2, vendor decoders in the TTN device
repository). Which groups a product has and how their words convert is
product data, so it comes from the device profile (``sensors`` option, see
config/profiles/lorawan-decentlab-*.toml); each value is the linear
``word * scale + offset`` that covers the usual Decentlab conversions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.drivers.lorawan.codecs import CodecConfigError, DecodeResult

PROTOCOL_VERSION = 2
HEADER_SIZE = 5


class ValueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    word: int = Field(default=0, ge=0, description="index of the word inside its group")
    scale: float = 1.0
    offset: float = 0.0
    channel: str | None = None
    digits: int = Field(default=6, ge=0, le=12, description="decimal places kept")


class SensorGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: int = Field(ge=1, le=32)
    values: list[ValueSpec] = Field(min_length=1)


class DecentlabOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sensors: list[SensorGroup] = Field(min_length=1, max_length=16)


class Decentlab:
    """Codec ``decentlab``. Options: ``sensors`` (list of groups), from a profile."""

    name: ClassVar[str] = "decentlab"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        try:
            self.options = DecentlabOptions.model_validate(dict(options or {}))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CodecConfigError(
                f"decentlab: {where}: {first['msg']} (the sensor groups of a product come from a profile, "
                'e.g. profile = "lorawan-decentlab-dl-sht35")'
            ) from exc
        for g, group in enumerate(self.options.sensors):
            for spec in group.values:
                if spec.word >= group.words:
                    raise CodecConfigError(f"decentlab: sensors[{g}]: word {spec.word} >= words {group.words}")

    def decode(self, payload: bytes, f_port: int) -> DecodeResult:
        result = DecodeResult()
        if len(payload) < HEADER_SIZE:
            result.problems.append("truncated_payload")
            return result
        if payload[0] != PROTOCOL_VERSION:
            result.problems.append("unsupported_version")
            return result
        flags = int.from_bytes(payload[3:5], "big")
        pos = HEADER_SIZE
        for i, group in enumerate(self.options.sensors):
            if not flags & (1 << i):
                continue
            end = pos + 2 * group.words
            if end > len(payload):
                result.problems.append("truncated_payload")
                break
            words = [int.from_bytes(payload[p : p + 2], "big") for p in range(pos, end, 2)]
            for spec in group.values:
                value = round(words[spec.word] * spec.scale + spec.offset, spec.digits)
                result.add(spec.quantity, value, spec.unit, spec.channel)
            pos = end
        return result
