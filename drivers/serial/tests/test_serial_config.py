"""Config: profiles and inline decoders validate, errors name the key path, sample.toml loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from gateway.drivers.serial.config import NMEADecoder, PMS5003Decoder, SDS011Decoder, SerialSourceConfig, resolve
from gateway.drivers.serial.driver import SerialDriver

HERE = Path(__file__).resolve().parent.parent
PROFILES = ["sds011", "pms5003", "nmea-gps", "maker-climate-kv", "maker-climate-csv", "maker-climate-json"]


def _cfg(**kw: object) -> SerialSourceConfig:
    return SerialSourceConfig.model_validate({"driver": "serial", "name": "src", "port": "/dev/ttyUSB0", **kw})


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profiles_validate(profile: str) -> None:
    decoder, baudrate = resolve(_cfg(profile=profile))
    assert decoder.type in ("sds011", "pms5003", "nmea", "keyvalue", "csv", "json")
    assert baudrate in (9600, 115200)


def test_inline_keys_override_the_profile() -> None:
    decoder, baudrate = resolve(_cfg(profile="sds011", decoder={"mode": "query", "working_period": 3}, baudrate=19200))
    assert isinstance(decoder, SDS011Decoder)
    assert (decoder.mode, decoder.working_period, baudrate) == ("query", 3, 19200)


def test_sample_toml_loads_through_the_core() -> None:
    config = load_config(HERE / "sample.toml")
    serial_sources = [s for s in config.sources if s.driver_class is SerialDriver]
    assert [s.config.name for s in serial_sources] == ["gps", "sds011", "pms5003", "climate-board"]


def _errors(toml: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(toml, source="gw.toml")
    return str(info.value)


def test_unknown_key_names_the_path_and_suggests() -> None:
    message = _errors('[[sources]]\ndriver = "serial"\nname = "a"\nport = "/dev/x"\nprofile = "sds011"\nbaud = 9600\n')
    assert "gw.toml: sources[0].baud: unknown key; did you mean 'baudrate'?" in message


def test_bad_decoder_field_names_the_key_path() -> None:
    toml = """
[[sources]]
driver = "serial"
name = "a"
port = "/dev/x"
[sources.decoder]
type = "csv"
columns = ["t"]
[[sources.decoder.fields]]
key = "t"
quantity = "temperature"
unit = "K"
"""
    message = _errors(toml)
    assert "sources[0].decoder.fields[0]: unit 'K' cannot be converted" in message


def test_bad_profile_override_names_the_profile_file() -> None:
    source = '[[sources]]\ndriver = "serial"\nname = "a"\nport = "/dev/x"\nprofile = "nmea-gps"\n'
    message = _errors(source + 'decoder = { mode = "query" }\n')
    assert "sources[0].decoder.mode: unknown key (allowed: publish_position, sentences, type)" in message
    assert "nmea-gps.toml" in message


def test_unknown_profile_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"no profile named 'sds012'.*sds011"):
        resolve(_cfg(profile="sds012"))


def test_a_decoder_or_profile_is_required() -> None:
    with pytest.raises(ValueError, match="give a profile or a decoder"):
        resolve(_cfg())


def test_regex_fields_must_be_named_groups() -> None:
    with pytest.raises(ValueError, match=r"fields \['x'\] are not named groups"):
        resolve(_cfg(decoder={"type": "regex", "pattern": "(?P<t>\\d+)", "fields": [{"key": "x", "quantity": "co2"}]}))


def test_stopbits_and_self_position() -> None:
    with pytest.raises(ValueError, match="stop bits"):
        _cfg(profile="sds011", stopbits=3)
    assert _cfg(profile="sds011", stopbits=1.5).stopbits == 1.5
    with pytest.raises(ValueError, match="position_from"):
        SerialDriver.validate(_cfg(profile="sds011", position_from="src"))


def test_profile_content_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('baudrate = "fast"\n[decoder]\ntype = "pms5003"\n')
    with pytest.raises(ValueError, match=r"broken.toml: baudrate: expected a whole number \(got 'fast'\)"):
        resolve(_cfg(profile=str(bad)))


def test_decoder_defaults() -> None:
    pms, _ = resolve(_cfg(profile="pms5003"))
    nmea, _ = resolve(_cfg(profile="nmea-gps"))
    assert isinstance(pms, PMS5003Decoder) and pms.mode is None and not pms.particle_counts
    assert isinstance(nmea, NMEADecoder) and nmea.sentences == ["GGA", "RMC"]
