"""The ``[fleet]`` config section: where the status goes and how often.

The status has its own broker connection (not the MQTT sink's): a gateway with only an InfluxDB sink
can publish it, its Last Will and keepalive can be tuned for a fast dead-box signal without touching
the data path, and the sink's client id and reconnects stay its own. Leave ``host`` out to send the
health only as readings (device ``_gateway``) to the sinks.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from gateway.config_types import Duration, SecretFile

DEFAULT_TOPIC_PREFIX = "gateway-fleet/v1"


class FleetSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(default=None, min_length=1, description="MQTT broker for the status; none: no status")
    port: int | None = Field(default=None, ge=1, le=65535, description="default 1883, or 8883 with TLS")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description='inline only as "${ENV_VAR}"')
    password_file: SecretFile | None = None
    password_env: str | None = None
    tls: bool = Field(default=False, description="implied by ca_file or cert_file")
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    topic_prefix: str = Field(default=DEFAULT_TOPIC_PREFIX, min_length=1)
    keepalive: int = Field(default=15, ge=5, le=3600, description="seconds; the broker says offline after 1.5x")
    status_interval: Duration = Field(default=30.0, ge=1, le=3600, description="republish at least this often")
    health_readings: bool = Field(default=True, description="also send the health as readings of device _gateway")
    health_interval: Duration = Field(default=60.0, ge=1, le=86400)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "+#\x00") or value.startswith("/") or value.endswith("/"):
            raise ValueError("a topic prefix has no '+', '#', and no leading or trailing '/'")
        return value

    @field_validator("password_file", "password_env")
    @classmethod
    def _one_password(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and any(info.data.get(k) for k in ("password", "password_file") if k != info.field_name):
            raise ValueError("set only one of password, password_file, password_env")
        return value

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None
