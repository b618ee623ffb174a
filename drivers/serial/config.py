"""Config model of one serial source (one port) and of the decoder, profile or inline.

A source names a ``profile`` (config/profiles/<name>.toml, whose ``[decoder]``
table gives the frame format and fields), an inline ``decoder`` table, or both:
inline keys then override the profile's (e.g. ``decoder = { mode = "query" }``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from gateway.config_messages import problems_from_validation
from gateway.config_types import ConfigValueError, ConfigValueErrors, Duration
from gateway.driver import SourceConfig
from gateway.profiles import ProfileError, list_profiles, load_profile
from gateway.quantities import QUANTITIES, convert_to_canonical


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldSpec(_Strict):
    """One field of a text line mapped to a canonical quantity: value * scale + offset."""

    key: str = Field(min_length=1, description="regex group, CSV column name, JSON path (a.b), or key of key=value")
    quantity: str = Field(min_length=1)
    unit: str | None = Field(default=None, description="default: the quantity's canonical unit")
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _known_unit(self) -> FieldSpec:
        known = QUANTITIES.get(self.quantity)
        if known is None:
            if self.unit is None:
                raise ValueError(f"quantity {self.quantity!r} is not canonical; give its unit")
        elif self.unit is None:
            self.unit = known.unit
        elif convert_to_canonical(self.quantity, 1.0, self.unit) is None:
            raise ValueError(f"unit {self.unit!r} cannot be converted to {known.unit!r} for {self.quantity!r}")
        return self


class _LineDecoder(_Strict):
    fields: list[FieldSpec] = Field(min_length=1)
    max_line_length: int = Field(default=512, ge=16, le=65536)


class RegexDecoder(_LineDecoder):
    type: Literal["regex"]
    pattern: str = Field(description="Python regex with named groups, matched with re.search")

    @model_validator(mode="after")
    def _groups(self) -> RegexDecoder:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ConfigValueError(("pattern",), f"not a valid regular expression: {exc}") from exc
        missing = [f.key for f in self.fields if f.key not in compiled.groupindex]
        if missing:
            raise ConfigValueError(
                ("fields",),
                f"fields {missing} are not named groups of the pattern; name them like (?P<{missing[0]}>...)",
            )
        return self


class CSVDecoder(_LineDecoder):
    type: Literal["csv"]
    columns: list[str] = Field(min_length=1, description="column names in order; '' for a column to ignore")
    delimiter: str = Field(default=",", min_length=1, max_length=1)

    @model_validator(mode="after")
    def _columns(self) -> CSVDecoder:
        missing = [f.key for f in self.fields if f.key not in self.columns]
        if missing:
            raise ConfigValueError(("fields",), f"fields {missing} are not in columns {self.columns}")
        return self


class JSONDecoder(_LineDecoder):
    type: Literal["json"]


class KeyValueDecoder(_LineDecoder):
    type: Literal["keyvalue"]
    pair_separator: str | None = Field(default=None, description="between pairs; default: whitespace, ',' or ';'")
    kv_separator: str = Field(default="=", min_length=1)


class SDS011Decoder(_Strict):
    type: Literal["sds011"]
    mode: Literal["active", "query"] | None = Field(
        default=None, description="set at start; query = the driver asks every `interval`; unset = leave as is"
    )
    working_period: int | None = Field(default=None, ge=0, le=30, description="minutes; 0 = continuous")


class PMS5003Decoder(_Strict):
    type: Literal["pms5003"]
    mode: Literal["active", "query"] | None = Field(
        default=None, description="query = passive mode, the driver asks every `interval`; unset = leave as is"
    )
    particle_counts: bool = False


Sentence = Literal["GGA", "RMC"]


def _all_sentences() -> list[Sentence]:
    return ["GGA", "RMC"]


class NMEADecoder(_Strict):
    type: Literal["nmea"]
    sentences: list[Sentence] = Field(default_factory=_all_sentences, min_length=1)
    publish_position: bool = Field(default=True, description="share the fix in the position registry")


DecoderConfig = Annotated[
    RegexDecoder | CSVDecoder | JSONDecoder | KeyValueDecoder | SDS011Decoder | PMS5003Decoder | NMEADecoder,
    Field(discriminator="type"),
]
_DECODER = TypeAdapter(DecoderConfig)

Parity = Literal["none", "even", "odd", "mark", "space"]


class SerialSourceConfig(SourceConfig):
    driver: Literal["serial"]
    port: str = Field(min_length=1, description="/dev/ttyUSB0, /dev/serial/by-id/... (stable), or a pty link")
    device: str | None = Field(default=None, description="device name in readings; default: the source name")
    profile: str | None = None
    decoder: dict[str, Any] = Field(default_factory=dict, description="inline decoder, or overrides of the profile's")
    baudrate: int | None = Field(default=None, gt=0, description="default: the profile's, else 9600")
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "none"
    stopbits: float = Field(default=1, description="1, 1.5 or 2")
    frame_timeout: Duration = Field(default=0.5, gt=0, description="drop a partial frame after this much quiet")
    silence_timeout: Duration = Field(default=30.0, gt=0, description="device down after this long without a frame")
    reconnect_max: Duration = Field(default=30.0, gt=0, description="cap of the reopen backoff")
    position_from: str | None = Field(
        default=None,
        description="a GPS source: its fix becomes this device's latitude/longitude readings (docs/data-model.md)",
    )
    position_max_age: Duration = Field(default=10.0, gt=0, description="an older fix is not used")
    position_tag_decimals: int | None = Field(
        default=None,
        ge=0,
        le=3,
        description="also tag readings with lat/lon rounded to this many decimals (2: ~1 km); none by default, "
        "since a precise position as a tag makes a new series at every move",
    )

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stop bits must be 1, 1.5 or 2")
        return value

    @property
    def device_name(self) -> str:
        return self.device or self.name


class SerialProfile(_Strict):
    """Contents of a serial device profile TOML file."""

    description: str = ""
    baudrate: int = Field(default=9600, gt=0)
    decoder: dict[str, Any]


def resolve(config: SerialSourceConfig) -> tuple[DecoderConfig, int]:
    """Merge profile and inline decoder and validate them. Raises ConfigValueError(s) naming the key path."""
    raw: dict[str, Any] = {}
    baudrate = 9600
    where = ""
    if config.profile is not None:
        try:
            path, data = load_profile(config.profile)
        except ProfileError as exc:
            raise ConfigValueError(("profile",), str(exc)) from exc
        if "decoder" not in data and ("registers" in data or "codec" in data):
            kind = "Modbus" if "registers" in data else "LoRa"
            raise ConfigValueError(
                ("profile",),
                f"{config.profile!r} ({path}) is a {kind} device profile, not a serial one; a serial source needs a "
                f"profile with a [decoder] table, e.g. {', '.join(serial_profiles()) or 'sds011'}",
            )
        try:
            profile = SerialProfile.model_validate(data)
        except ValidationError as exc:
            problems = problems_from_validation(exc, SerialProfile)
            raise ConfigValueError(("profile",), "; ".join(f"{path}: {p}" for p in problems)) from exc
        raw.update(profile.decoder)
        baudrate = profile.baudrate
        where = f" (decoder merged with profile {path})"
    raw.update(config.decoder)
    if not raw:
        raise ConfigValueError(
            ("profile",),
            'give a profile or a decoder table, e.g. profile = "sds011" or decoder = { type = "csv", ... }',
        )
    try:
        decoder = _DECODER.validate_python(raw)
    except ValidationError as exc:
        model = _DECODER_MODELS.get(str(raw.get("type")))
        problems = problems_from_validation(exc, model, ("decoder",), skip=tuple(_DECODER_MODELS))
        errors = [ConfigValueError(tuple(_loc(p.key_path)), p.message + where) for p in problems]
        raise errors[0] if len(errors) == 1 else ConfigValueErrors(errors) from exc
    return decoder, config.baudrate or baudrate


def _loc(path: str) -> list[int | str]:
    """'decoder.fields[0].unit' -> ['decoder', 'fields', 0, 'unit'] (the loader joins it back)."""
    loc: list[int | str] = []
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            loc.append(int(part.strip("[]")))
        elif part:
            loc.append(part)
    return loc


def serial_profiles() -> list[str]:
    """Names of the profiles that describe serial devices (they have a [decoder] table)."""
    names = []
    for name in list_profiles():
        try:
            _, raw = load_profile(name)
        except ProfileError:
            continue
        if "decoder" in raw:
            names.append(name)
    return names


_DECODER_MODELS: dict[str, type[BaseModel]] = {
    "regex": RegexDecoder, "csv": CSVDecoder, "json": JSONDecoder, "keyvalue": KeyValueDecoder,
    "sds011": SDS011Decoder, "pms5003": PMS5003Decoder, "nmea": NMEADecoder,
}  # fmt: skip
