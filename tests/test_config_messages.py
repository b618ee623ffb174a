"""Config messages a technician can act on: exact `file: key.path: message` shapes (issue 8, items 10 and 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, load_config, parse_config

SIM = '[[sources]]\ndriver = "simulated"\nname = "s"\ndevices = [{ name = "w", kind = "weather" }]\n'
INFLUX = '[[sinks]]\ntype = "influxdb"\nurl = "https://influx.example:8086"\norg = "o"\nbucket = "b"\n'


def _problems(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env or {})
    return str(err.value).splitlines()


def _load(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return load_config(path, env=env or {})


def test_a_config_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_bytes(b'[gateway]\nsite = "caf\xe9"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: line 2: not UTF-8 text (byte 0xe9 at column 12); save the file as UTF-8, "
        "e.g. iconv -f latin1 -t utf-8 old.toml > gateway.toml"
    )


def test_a_duration_error_says_what_is_allowed_once(tmp_path: Path) -> None:
    text = SIM.replace('name = "s"', 'name = "s"\ninterval = "5 parsecs"')
    assert _problems(text, tmp_path) == [
        f"{tmp_path / 'gw.toml'}: sources[0].interval: not a duration; write a number with a unit ms, s, m, h or d, "
        "e.g. '500ms', '10s', '5m', '1h' (got '5 parsecs')"
    ]


def test_a_url_without_scheme_shows_no_regular_expression(tmp_path: Path) -> None:
    text = SIM + INFLUX.replace("https://influx.example:8086", "influx.example:8086") + 'token_env = "T"\n'
    (line,) = _problems(text, tmp_path)
    assert line == (
        f"{tmp_path / 'gw.toml'}: sinks[0].url: does not have the expected form "
        "(http:// or https:// and the server, e.g. http://influx.local:8086) (got 'influx.example:8086')"
    )


def test_an_inline_token_is_refused_with_where_to_put_it(tmp_path: Path) -> None:
    (line,) = _problems(SIM + INFLUX + 'token = "s3cr3t-token"\n', tmp_path)
    assert line.startswith(f"{tmp_path / 'gw.toml'}: sinks[0].token: a token is never written in the config file")
    assert 'token_file = "influx-token"' in line and "/etc/gateway/credentials/" in line
    assert "s3cr3t" not in line
    # the documented ways stay allowed
    config = _load(SIM + INFLUX + 'token = "${INFLUX_TOKEN}"\n', tmp_path, env={"INFLUX_TOKEN": "t"})
    assert config.sinks[0].config.token.get_secret_value() == "t"  # type: ignore[attr-defined]


def test_an_inline_mqtt_password_is_refused(tmp_path: Path) -> None:
    text = SIM + '[[sinks]]\ntype = "mqtt"\nhost = "h"\nusername = "u"\npassword = "hunter2"\n'
    (line,) = _problems(text, tmp_path)
    assert line.startswith(f"{tmp_path / 'gw.toml'}: sinks[0].password: a password is never written")
    assert 'password_file = "password"' in line


def test_a_token_file_cannot_leave_the_credentials_directory(tmp_path: Path) -> None:
    (line,) = _problems(SIM + INFLUX + 'token_file = "../../../../etc/hostname"\n', tmp_path)
    assert line == (
        f"{tmp_path / 'gw.toml'}: sinks[0].token_file: '../../../../etc/hostname' leaves the credentials directory; "
        "name the file only, e.g. 'influx-token' (it is looked up in $CREDENTIALS_DIRECTORY, see docs/sinks.md#secrets)"
    )


def test_metrics_on_every_interface_is_a_warning(tmp_path: Path) -> None:
    config = _load(SIM + '[metrics]\nlisten = "0.0.0.0:9108"\n', tmp_path)
    (warning,) = config.warnings
    assert str(warning).startswith("metrics.listen: '0.0.0.0:9108' serves the metrics to the network")
    assert _load(SIM + '[metrics]\nlisten = "[::1]:9108"\n', tmp_path).warnings == ()
    assert _load(SIM + '[metrics]\nlisten = "localhost:9108"\n', tmp_path).warnings == ()


MODBUS_RTU = '[[sources]]\ndriver = "modbus"\nname = "bus"\ntransport = "rtu"\n{line}\n' \
             '[[sources.devices]]\nname = "m"\nprofile = "{profile}"\n'  # fmt: skip


def test_modbus_rtu_takes_the_serial_device_as_port_like_the_serial_driver(tmp_path: Path) -> None:
    config = _load(MODBUS_RTU.format(line='port = "/dev/ttyUSB0"', profile="xy-md02"), tmp_path)
    assert config.sources[0].config.serial_port == "/dev/ttyUSB0"  # type: ignore[attr-defined]
    assert config.warnings == ()


def test_modbus_serial_port_still_works_with_a_deprecation_warning(tmp_path: Path) -> None:
    config = _load(MODBUS_RTU.format(line='serial_port = "/dev/ttyUSB0"', profile="xy-md02"), tmp_path)
    assert config.sources[0].config.serial_port == "/dev/ttyUSB0"  # type: ignore[attr-defined]
    assert [str(w) for w in config.warnings] == [
        "sources[0].serial_port: serial_port is the old name of port; write port = '/dev/ttyUSB0'"
    ]


def test_modbus_port_messages(tmp_path: Path) -> None:
    assert _problems(MODBUS_RTU.format(line="", profile="xy-md02"), tmp_path) == [
        f'{tmp_path / "gw.toml"}: sources[0].port: transport "rtu" needs the serial device, '
        'e.g. port = "/dev/serial/by-id/usb-FTDI_...-port0"'
    ]
    tcp = MODBUS_RTU.format(line='port = "/dev/ttyUSB0"', profile="xy-md02").replace('"rtu"', '"tcp"\nhost = "h"')
    assert _problems(tcp, tmp_path) == [
        f"{tmp_path / 'gw.toml'}: sources[0].port: expected a whole number (the TCP port on tcp / rtu_over_tcp, "
        'e.g. 502; with transport = "rtu" the serial device, e.g. "/dev/ttyUSB0") (got \'/dev/ttyUSB0\')'
    ]


def test_a_modbus_device_given_a_serial_profile_says_so(tmp_path: Path) -> None:
    (line,) = _problems(MODBUS_RTU.format(line='port = "/dev/ttyUSB0"', profile="sds011"), tmp_path)
    assert line.startswith(f"{tmp_path / 'gw.toml'}: sources[0].devices[0].profile: 'sds011' (") and line.endswith(
        "sds011.toml) is a serial device profile, not a Modbus one; a Modbus device needs a profile with "
        "[[registers]], e.g. eastron-sdm120, eastron-sdm630, xy-md02"
    )


def test_check_on_a_profile_says_it_is_a_profile(tmp_path: Path) -> None:
    text = 'description = "meter"\n[[registers]]\nquantity = "voltage"\naddress = 0\n'
    assert _problems(text, tmp_path) == [
        f"{tmp_path / 'gw.toml'}: this is a device profile (it has 'registers'), not a gateway config: a profile is "
        'used by naming it in a source, e.g. profile = "xy-md02"; check the gateway config that uses it '
        "(gateway check -c /etc/gateway/gateway.toml)"
    ]


def test_an_unknown_key_does_not_hide_the_other_errors_of_its_source(tmp_path: Path) -> None:
    text = (
        '[[sources]]\ndriver = "modbus"\nname = "bus"\nhost = "h"\nbaud = 9600\n'
        '[[sources.devices]]\nname = "a"\nunit_id = 1\nprofile = "xy-md02"\n'
        '[[sources.devices]]\nname = "b"\nunit_id = 1\nprofile = "xy-md02"\n'
    )
    file = tmp_path / "gw.toml"
    problems = _problems(text, tmp_path)
    assert problems[0].startswith(f"{file}: sources[0].baud: unknown key; did you mean 'baudrate'?")
    assert problems[1:] == [f"{file}: sources[0].devices[1].unit_id: 1 is already used by 'a'"]


def test_literal_choices_are_listed_in_words(tmp_path: Path) -> None:
    assert _problems('[buffer]\noverflow = "drop_everything"\n', tmp_path) == [
        f"{tmp_path / 'gw.toml'}: buffer.overflow: not allowed; allowed: 'drop_oldest' or 'drop_newest' "
        "(got 'drop_everything')"
    ]


def test_without_a_file_relative_paths_stay_as_written() -> None:
    config = parse_config('[gateway]\nstate_dir = "st"\n')
    assert config.base.gateway.state_dir == Path("st")


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "profiles").mkdir(parents=True)
    (site / "profiles" / "my-meter.toml").write_text('[[registers]]\nquantity = "voltage"\naddress = 0\n')
    text = (
        (
            '[gateway]\nstate_dir = "state"\n[buffer]\npath = "buf/b.sqlite"\n'
            '[[sources]]\ndriver = "modbus"\nname = "bus"\nhost = "h"\nprofile_dirs = ["profiles"]\n'
            'devices = [{ name = "a", profile = "my-meter" }, { name = "b", unit_id = 2, '
            'profile = "profiles/my-meter.toml" }]\n'
            '[[sinks]]\ntype = "local"\npath = "store/local.sqlite"\n'
        )
        + INFLUX
        + 'name = "influx"\ntoken_file = "influx-token"\n'
    )
    config = _load(text, site)
    assert config.base.gateway.state_dir == site / "state"
    assert config.buffer_path == site / "buf" / "b.sqlite"
    modbus = config.sources[0].config
    assert modbus.profile_dirs == [site / "profiles"]  # type: ignore[attr-defined]
    assert modbus.devices[1].profile == str(site / "profiles" / "my-meter.toml")  # type: ignore[attr-defined]
    assert config.sinks[0].config.path == site / "store" / "local.sqlite"  # type: ignore[attr-defined]
    # a secret file: $CREDENTIALS_DIRECTORY under systemd, else the `credentials` folder next to the config
    assert config.sinks[1].config.token_file == site / "credentials" / "influx-token"  # type: ignore[attr-defined]
    under_systemd = _load(text, site, env={"CREDENTIALS_DIRECTORY": "/run/credentials/gateway.service"})
    token_file = under_systemd.sinks[1].config.token_file  # type: ignore[attr-defined]
    assert token_file == Path("/run/credentials/gateway.service/influx-token")


def test_unknown_keys_suggest_the_name_used_here(tmp_path: Path) -> None:
    text = (
        '[[sources]]\ndriver = "serial"\nname = "a"\nserial_port = "/dev/ttyUSB1"\nprofile = "sds011"\n'
        '[[sources]]\ndriver = "modbus"\nname = "m"\nhost = "h"\ndevices = [{ name = "d", slave_id = 3, '
        'profile = "xy-md02" }]\n'
    )
    problems = _problems(text, tmp_path)
    assert any(p.startswith(f"{tmp_path / 'gw.toml'}: sources[0].serial_port: unknown key; did you mean 'port'?")
               for p in problems)  # fmt: skip
    assert any(
        p.startswith(f"{tmp_path / 'gw.toml'}: sources[1].devices[0].slave_id: unknown key; did you mean 'unit_id'?")
        for p in problems
    )


SERIAL = '[[sources]]\ndriver = "serial"\nname = "a"\nport = "/dev/ttyUSB1"\n'


def test_a_serial_decoder_type_error_names_the_key_and_the_choices(tmp_path: Path) -> None:
    (line,) = _problems(SERIAL + 'decoder = { type = "bogus" }\n', tmp_path)
    assert line == (
        f"{tmp_path / 'gw.toml'}: sources[0].decoder.type: not allowed; allowed: 'regex', 'csv', 'json', 'keyvalue', "
        "'sds011', 'pms5003', 'nmea' (got 'bogus')"
    )


def test_a_serial_source_given_a_modbus_profile_says_so(tmp_path: Path) -> None:
    (line,) = _problems(SERIAL + 'profile = "eastron-sdm630"\n', tmp_path)
    assert line.startswith(f"{tmp_path / 'gw.toml'}: sources[0].profile: 'eastron-sdm630' (")
    assert "is a Modbus device profile, not a serial one; a serial source needs a profile with a [decoder] table" in (
        line
    )
    assert "sds011" in line
