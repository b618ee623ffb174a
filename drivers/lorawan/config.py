"""Configuration model of the ``lorawan`` driver and of its device profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.config_types import Duration, SecretFile
from gateway.driver import SourceConfig

RadioMode = Literal["readings", "tags", "both", "off"]


class ObjectField(BaseModel):
    """Maps one key of the server's decoded object to a canonical quantity."""

    model_config = ConfigDict(extra="forbid")

    quantity: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    scale: float = 1.0
    channel: str | None = None


class DeviceProfile(BaseModel):
    """Contents of ``config/profiles/lorawan-*.toml``."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    codec: str | None = None
    codec_options: dict[str, Any] = Field(default_factory=dict)
    f_ports: list[int] = Field(default_factory=list, description="ports that carry measurements; empty = all")
    object_fields: dict[str, ObjectField] = Field(
        default_factory=dict, description="dotted key in the server's decoded object -> quantity"
    )


class DeviceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="DevEUI (hex) or The Things Stack device id")
    name: str | None = Field(default=None, description="device name in readings; default: the id")
    profile: str | None = None
    codec: str | None = None
    codec_options: dict[str, Any] | None = None
    object_fields: dict[str, ObjectField] | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class LoRaWANConfig(SourceConfig):
    """One [[sources]] entry = one MQTT connection to a network server."""

    driver: Literal["lorawan"]
    server: Literal["chirpstack", "ttn"]
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: bool = False
    username: str | None = None
    password_file: SecretFile | None = Field(default=None, description="file holding the password / API key")
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    client_id: str | None = Field(default=None, description="stable MQTT client id; default gateway-<gw>-<source>")
    application: str = Field(
        default="+", description="ChirpStack application id, or TTS '<app>@<tenant>'; '+' = every one"
    )
    topics: list[str] | None = Field(default=None, description="override the subscriptions")
    qos: Literal[0, 1] = 1
    persistent_session: bool = True
    use_server_decoded: bool = Field(
        default=False, description="use the server's decoded object when a device has object_fields"
    )
    default_codec: str | None = None
    fport_codecs: dict[int, str] = Field(default_factory=dict, description="fPort -> codec for unlisted devices")
    devices: list[DeviceConfig] = Field(default_factory=list)
    accept_unknown_devices: bool = True
    radio: RadioMode = Field(default="readings", description="RSSI/SNR/fCnt/SF as readings, tags, both or off")
    dedup_window: Duration = Field(default=3600.0, gt=0)
    dedup_max_entries: int = Field(default=100_000, ge=100)
    batch_max: int = Field(default=500, ge=1, le=10_000, description="messages committed per buffer write")

    @model_validator(mode="after")
    def _unique_devices(self) -> LoRaWANConfig:
        seen: set[str] = set()
        for i, dev in enumerate(self.devices):
            key = dev.id.lower()
            if key in seen:
                raise ValueError(f"devices[{i}].id {dev.id!r} is listed twice")
            seen.add(key)
        return self


def profile_problem(path: Path, exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{path}: {where}: {err['msg']}"
