"""Config models: one [[sources]] entry = one Modbus bus with its devices.

The same ``FieldSpec`` model validates registers written inline in the
gateway config and registers in a device profile (config/profiles/*.toml).
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config_types import ConfigValueError, ConfigWarning, Duration
from gateway.driver import SourceConfig
from gateway.drivers.modbus.decode import DataType, WordOrder
from gateway.quantities import QUANTITIES, convert_to_canonical

Table = Literal["coil", "discrete", "holding", "input"]
Transport = Literal["tcp", "rtu", "rtu_over_tcp"]

# Protocol limits (Modbus Application Protocol v1.1b3, FC 01/02/03/04).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000

_INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldSpec(_Strict):
    """One value read from a device: where it lives, how to decode it, what it means."""

    quantity: str = Field(description="canonical quantity name (gateway.quantities)")
    unit: str | None = Field(default=None, description="default: the quantity's canonical unit")
    table: Table = "holding"
    address: int = Field(ge=0, le=0xFFFF, description="PDU address, 0-based")
    type: DataType = "uint16"
    order: WordOrder = "ABCD"
    length: int = Field(default=1, ge=1, le=MAX_REGISTERS_PER_READ, description="registers, for type = 'string'")
    bit: int | None = Field(default=None, ge=0, le=63)
    mask: int | None = Field(default=None, ge=1)
    scale: float = 1.0
    offset: float = 0.0
    valid_min: float | None = None
    valid_max: float | None = None
    tags: dict[str, str] = Field(default_factory=dict, description="e.g. {phase = 'L1'}")
    name: str | None = Field(default=None, description="label in logs and probe output")

    @model_validator(mode="after")
    def _check(self) -> FieldSpec:
        if self.quantity not in QUANTITIES:
            close = difflib.get_close_matches(self.quantity, list(QUANTITIES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else " (see gateway/quantities.py)"
            raise ValueError(f"quantity {self.quantity!r} is not a canonical quantity{hint}")
        if self.unit is not None and convert_to_canonical(self.quantity, 1.0, self.unit) is None:
            raise ValueError(
                f"unit {self.unit!r} cannot be converted to {QUANTITIES[self.quantity].unit!r} for {self.quantity}"
            )
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"table {self.table!r} holds single bits; use type = 'bool'")
        if self.bit is not None and self.type not in (*_INTEGER_TYPES, "bool"):
            raise ValueError("bit works with integer and bool types only")
        if self.bit is not None and self.bit >= 16 * self.span:
            raise ValueError(f"bit {self.bit} is outside a {self.type} ({16 * self.span} bits)")
        if self.mask is not None and self.type not in _INTEGER_TYPES:
            raise ValueError("mask works with integer types only")
        if self.bit is not None and self.mask is not None:
            raise ValueError("use either bit or mask, not both")
        if self.length != 1 and self.type != "string":
            raise ValueError("length is for type = 'string' only")
        if self.valid_min is not None and self.valid_max is not None and self.valid_min > self.valid_max:
            raise ValueError("valid_min is greater than valid_max")
        if self.address + self.span - 1 > 0xFFFF:
            raise ValueError("the value runs past address 65535")
        return self

    @property
    def span(self) -> int:
        """Registers (or bits, for coil/discrete) this field occupies."""
        if self.table in ("coil", "discrete") or self.type in ("bool", "int16", "uint16"):
            return 1
        if self.type == "string":
            return self.length
        return 4 if self.type in ("int64", "uint64", "float64") else 2

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        suffix = ",".join(f"{k}={v}" for k, v in sorted(self.tags.items()))
        return f"{self.quantity}[{suffix}]" if suffix else self.quantity


class DeviceConfig(_Strict):
    """One unit on the bus."""

    name: str = Field(min_length=1, description="device name in readings")
    unit_id: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id; 1..247 on a serial line")
    profile: str | None = Field(default=None, description="profile name or path (config/profiles/<name>.toml)")
    registers: list[FieldSpec] = Field(default_factory=list, description="inline fields, added to the profile's")
    interval: Duration | None = Field(default=None, gt=0, description="default: the source's interval")
    max_registers_per_read: int | None = Field(default=None, ge=1, le=MAX_REGISTERS_PER_READ)
    max_bits_per_read: int | None = Field(default=None, ge=1, le=MAX_BITS_PER_READ)
    max_gap: int | None = Field(default=None, ge=0, le=MAX_REGISTERS_PER_READ)
    timeout: Duration | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)
    tags: dict[str, str] = Field(default_factory=dict)


class ModbusSourceConfig(SourceConfig):
    """A Modbus bus: a serial line (``rtu``) or a TCP endpoint (``tcp``, ``rtu_over_tcp``)."""

    driver: Literal["modbus"]
    transport: Transport = "tcp"
    host: str | None = Field(default=None, description="tcp / rtu_over_tcp")
    port: int = Field(
        default=502,
        ge=1,
        le=65535,
        description='the TCP port on tcp / rtu_over_tcp, e.g. 502; with transport = "rtu" the serial device, '
        'e.g. "/dev/ttyUSB0"',
    )
    # Filled from `port` on rtu; `serial_port` is the key's old name (released in 0.1), still read.
    serial_port: str | None = Field(default=None, description='old name of port on rtu; write port = "/dev/..."')
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: Duration = Field(default=1.0, gt=0, description="per request")
    retries: int = Field(default=1, ge=0, le=10, description="per request, after timeouts, bad CRC or 'busy'")
    inter_frame_pause: Duration | None = Field(
        default=None, ge=0, description="pause between transactions; default 5ms on rtu, 0 on tcp"
    )
    max_gap: int = Field(default=8, ge=0, le=MAX_REGISTERS_PER_READ, description="unused registers read to coalesce")
    backoff_max: Duration = Field(default=300.0, gt=0, description="cap of a dead device's retry delay")
    profile_dirs: list[Path] = Field(default_factory=list, description="searched before the shipped profiles")
    devices: list[DeviceConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _serial_device_is_port(cls, data: Any) -> Any:
        # One name for one idea: the serial device is `port` here as in the serial and loramodem
        # drivers. On a TCP transport `port` stays the TCP port number.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "serial_port" in data:
            warnings.warn(
                ConfigWarning(
                    f"serial_port is the old name of port; write port = {data['serial_port']!r}", ("serial_port",)
                ),
                stacklevel=2,
            )
        port = data.get("port")
        if data.get("transport") == "rtu" and isinstance(port, str) and not port.strip().isdigit():
            data["serial_port"] = data.pop("port")
        return data

    @model_validator(mode="after")
    def _check(self) -> ModbusSourceConfig:
        if self.transport in ("tcp", "rtu_over_tcp") and not self.host:
            raise ConfigValueError(("host",), f'transport {self.transport!r} needs host, e.g. host = "192.168.1.50"')
        if self.transport == "rtu" and not self.serial_port:
            raise ConfigValueError(
                ("port",), 'transport "rtu" needs the serial device, e.g. port = "/dev/serial/by-id/usb-FTDI_...-port0"'
            )
        seen: dict[str, int] = {}
        units: dict[int, str] = {}
        for i, dev in enumerate(self.devices):
            if dev.name in seen:
                raise ConfigValueError(
                    ("devices", i, "name"), f"{dev.name!r} is already used by devices[{seen[dev.name]}]"
                )
            seen[dev.name] = i
            if dev.unit_id in units:
                raise ConfigValueError(
                    ("devices", i, "unit_id"), f"{dev.unit_id} is already used by {units[dev.unit_id]!r}"
                )
            units[dev.unit_id] = dev.name
            if not dev.profile and not dev.registers:
                raise ConfigValueError(
                    ("devices", i), f'{dev.name}: set profile (e.g. profile = "eastron-sdm630") or registers'
                )
        return self

    @property
    def pause_s(self) -> float:
        if self.inter_frame_pause is not None:
            return self.inter_frame_pause
        return 0.005 if self.transport == "rtu" else 0.0

    @property
    def endpoint(self) -> str:
        return self.serial_port or "" if self.transport == "rtu" else f"{self.host}:{self.port}"


class ProfileModel(_Strict):
    """A device profile file: device knowledge as data."""

    description: str = ""
    references: list[str] = Field(default_factory=list, description="vendor documents the addresses come from")
    max_registers_per_read: int | None = Field(default=None, ge=1, le=MAX_REGISTERS_PER_READ)
    max_bits_per_read: int | None = Field(default=None, ge=1, le=MAX_BITS_PER_READ)
    max_gap: int | None = Field(default=None, ge=0, le=MAX_REGISTERS_PER_READ)
    default_unit_id: int = Field(default=1, ge=0, le=255)
    default_baudrate: int | None = None
    registers: list[FieldSpec] = Field(min_length=1)
