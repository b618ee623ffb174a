"""Configuration model of the ``loramodem`` driver (one serial LoRa P2P modem)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from gateway.config_types import Duration
from gateway.driver import SourceConfig

# docs/protocols.md#4a-microchip-rn2483 and docs/protocols.md#4b-rakwireless-rak3172-rui3-firmware
DEFAULT_BAUD = {"rn2483": 57600, "rak3172": 115200}


class LoRaModemConfig(SourceConfig):
    driver: Literal["loramodem"]
    modem: Literal["rn2483", "rak3172"]
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int | None = Field(default=None, description="default: 57600 (RN2483), 115200 (RAK3172 RUI3)")
    frequency: int = Field(default=868_100_000, ge=137_000_000, le=1_020_000_000, description="Hz")
    spreading_factor: int = Field(default=7, ge=5, le=12)
    bandwidth: Literal[125, 250, 500] = Field(default=125, description="kHz")
    coding_rate: Literal["4/5", "4/6", "4/7", "4/8"] = "4/5"
    preamble: int = Field(default=8, ge=2, le=65535)
    tx_power: int = Field(default=14, ge=-3, le=22, description="dBm (RAK3172 needs it in AT+P2P)")
    sync_word: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{2}$", description="RN2483 only")
    response_timeout: Duration = Field(default=2.0, gt=0, le=30)
    device: str | None = Field(default=None, description="device name of the readings; default: the source name")
    address_bytes: int = Field(
        default=0, ge=0, le=8, description="leading payload bytes that identify the sending node (device-<hex>)"
    )
    codec: str | None = None
    codec_options: dict[str, Any] = Field(default_factory=dict)
    profile: str | None = Field(default=None, description="a lorawan-*.toml profile giving the codec")
    f_port: int = Field(default=0, ge=0, le=255, description="port passed to the codec (P2P has none; 0 = unknown)")
    radio_readings: bool = Field(default=True, description="emit rssi and snr readings per packet")

    @model_validator(mode="after")
    def _codec_source(self) -> LoRaModemConfig:
        if self.codec and self.profile:
            raise ValueError("give either codec or profile, not both")
        return self

    @property
    def baud(self) -> int:
        return self.baudrate or DEFAULT_BAUD[self.modem]
