"""Config and profile validation: clear errors with key paths, shipped files valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.drivers.modbus.config import ModbusSourceConfig
from gateway.drivers.modbus.devices import DeviceSetupError, resolve_devices

HERE = Path(__file__).resolve().parent.parent


def test_sample_toml_is_accepted() -> None:
    cfg = load_config(HERE / "sample.toml")
    sources = {s.config.name: s.config for s in cfg.sources}
    assert set(sources) == {"rs485-1", "streetlight-cabinet", "pump-plc"}
    rs485 = sources["rs485-1"]
    assert isinstance(rs485, ModbusSourceConfig)
    devices = resolve_devices(rs485)
    assert [len(d.plan) for d in devices] == [4, 1]
    assert devices[1].interval_s == 60.0


def _config(**source: Any) -> str:
    base: dict[str, Any] = {"driver": "modbus", "name": "bus", "transport": "tcp", "host": "127.0.0.1"}
    base.update(source)
    lines = ["[[sources]]"]
    devices = base.pop("devices")
    for k, v in base.items():
        lines.append(f"{k} = {v!r}".replace("'", '"'))
    for dev in devices:
        lines.append("[[sources.devices]]")
        for k, v in dev.items():
            lines.append(f"{k} = {_toml(v)}")
    return "\n".join(lines)


def _toml(v: Any) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _errors(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="gw.toml")
    return str(info.value)


def test_unknown_key_and_bad_type_name_the_key_path() -> None:
    msg = _errors(_config(devices=[{"name": "m", "profle": "xy-md02"}]))
    assert "gw.toml: sources[0].devices[0].profle: unknown key; did you mean 'profile'?" in msg
    msg = _errors(
        _config(devices=[{"name": "m", "registers": [{"quantity": "voltage", "address": 0, "type": "flot32"}]}])
    )
    assert "sources[0].devices[0].registers[0].type" in msg and "float32" in msg


def test_non_canonical_quantity_suggests_the_name() -> None:
    msg = _errors(_config(devices=[{"name": "m", "registers": [{"quantity": "temprature", "address": 0}]}]))
    assert "sources[0].devices[0].registers[0]" in msg and "did you mean 'temperature'" in msg


def test_cross_field_rules() -> None:
    assert "needs host" in _errors(_config(host="", devices=[{"name": "m", "profile": "xy-md02"}]))
    dup = [{"name": "a", "unit_id": 1, "profile": "xy-md02"}, {"name": "b", "unit_id": 1, "profile": "xy-md02"}]
    assert "sources[0].devices[1].unit_id: 1 is already used by 'a'" in _errors(_config(devices=dup))
    coil = [{"name": "m", "registers": [{"quantity": "open", "table": "coil", "address": 0, "type": "uint16"}]}]
    assert "use type = 'bool'" in _errors(_config(devices=coil))


def test_unknown_profile_lists_the_available_ones() -> None:
    msg = _errors(_config(devices=[{"name": "m", "profile": "sdm630"}]))
    assert "sources[0].devices[0].profile: no profile named 'sdm630'" in msg
    assert "eastron-sdm630" in msg


def test_broken_profile_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "my-meter.toml"
    bad.write_text('[[registers]]\nquantity = "voltage"\naddress = 0\ntype = "float32"\nscale = "ten"\n')
    msg = _errors(_config(profile_dirs=[str(tmp_path)], devices=[{"name": "m", "profile": "my-meter"}]))
    assert f"{bad}: registers[0].scale" in msg


def test_field_larger_than_device_limit_is_refused() -> None:
    regs = [{"quantity": "status", "address": 0, "type": "string", "length": 20}]
    msg = _errors(_config(devices=[{"name": "m", "registers": regs, "max_registers_per_read": 10}]))
    assert "sources[0].devices[0]: m: " in msg and "more than the 10 one read allows" in msg


def test_user_profile_directory_overrides_shipped(tmp_path: Path) -> None:
    (tmp_path / "xy-md02.toml").write_text(
        '[[registers]]\nquantity = "temperature"\ntable = "input"\naddress = 1\ntype = "int16"\nscale = 0.01\n'
    )
    cfg = ModbusSourceConfig.model_validate(
        {"driver": "modbus", "name": "b", "host": "h", "profile_dirs": [str(tmp_path)],
         "devices": [{"name": "t", "profile": "xy-md02"}]}
    )  # fmt: skip
    (dev,) = resolve_devices(cfg)
    assert dev.profile_path == tmp_path / "xy-md02.toml"
    assert dev.fields[0].scale == 0.01


def test_resolve_collects_every_device_problem() -> None:
    devices = [{"name": "a", "unit_id": 1, "profile": "nope-1"}, {"name": "b", "unit_id": 2, "profile": "nope-2"}]
    cfg = ModbusSourceConfig.model_validate({"driver": "modbus", "name": "b", "host": "h", "devices": devices})
    with pytest.raises(DeviceSetupError) as info:
        resolve_devices(cfg)
    assert "nope-1" in str(info.value) and "nope-2" in str(info.value)


def test_a_profile_is_parsed_once_while_unchanged_and_again_after_an_edit(tmp_path: Path) -> None:
    from gateway.drivers.modbus.devices import load_profile_model

    profile = tmp_path / "meter.toml"
    profile.write_text('[[registers]]\nquantity = "voltage"\naddress = 0\ntype = "float32"\n')
    first = load_profile_model("meter", [tmp_path])
    assert load_profile_model("meter", [tmp_path])[1] is first[1]  # 100 devices of one profile: one parse
    profile.write_text('[[registers]]\nquantity = "voltage"\naddress = 0\ntype = "float32"\nscale = 0.1\n')
    _, edited = load_profile_model("meter", [tmp_path])  # a reload after an edit sees the edit
    assert edited.registers[0].scale == 0.1
    profile.write_text('[[registers]]\nquantity = "voltage"\naddress = 0\ntype = "float32"\nscale = "x"\n')
    with pytest.raises(DeviceSetupError, match=r"registers\[0\]\.scale"):
        load_profile_model("meter", [tmp_path])
