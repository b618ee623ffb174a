"""Config loading is total (issue 8, found by fuzzing): any file gives a Config or a ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config


@pytest.mark.parametrize("text", ["a = " + "[" * 2000, "a = " + "{a = " * 2000])
def test_toml_nested_too_deeply_is_a_config_error(text: str) -> None:
    # tomllib raised RecursionError
    with pytest.raises(ConfigError, match=r"gw\.toml: not valid TOML: nested too deeply"):
        parse_config(text, source="gw.toml", env={})


def test_an_integer_of_more_than_4300_digits_is_a_config_error() -> None:
    # tomllib raised a plain ValueError (int() refuses more than 4300 digits), not TOMLDecodeError
    with pytest.raises(ConfigError, match=r"gw\.toml: not valid TOML: Exceeds the limit"):
        parse_config("[buffer]\nmax_bytes = " + "7" * 4301, source="gw.toml", env={})


def test_a_source_that_is_not_a_table_is_a_config_error() -> None:
    # "sources = [1]" raised pydantic's ValidationError out of the fallback validation
    with pytest.raises(ConfigError) as info:
        parse_config('sources = [1, "x"]\nsinks = [2]', source="gw.toml", env={})
    paths = [p.key_path for p in info.value.problems]
    assert {"sources[0]", "sources[1]", "sinks[0]"} <= set(paths)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    # load_config raised UnicodeDecodeError
    path = tmp_path / "gw.toml"
    path.write_bytes(b'[gateway]\nsite = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"gw.toml: line 2: not UTF-8 text \(byte 0x[0-9a-f]{2} at column \d+\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('max_bytes = "' + "7" * 400 + 'MB"', "buffer.max_bytes"),  # int(inf) raised OverflowError
        ("flush_interval = " + "7" * 400, "buffer.flush_interval"),  # float() of the int raised OverflowError
        ('flush_interval = "' + "9" * 400 + 's"', "buffer.flush_interval"),  # an infinite duration was accepted
    ],
)
def test_sizes_and_durations_beyond_float_range_are_config_errors(line: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[buffer]\n{line}\n", source="gw.toml", env={})
    assert [p.key_path for p in info.value.problems] == [key]


def test_a_profile_name_too_long_for_the_file_system_is_a_config_error() -> None:
    # Path.is_file() raised OSError (ENAMETOOLONG) out of the profile lookup
    text = '[[sources]]\ndriver = "serial"\nname = "s"\nport = "/dev/x"\nprofile = "' + "p" * 300 + '"\n'
    with pytest.raises(ConfigError, match=r"sources\[0\]\.profile: no profile named .ppp"):
        parse_config(text, source="gw.toml", env={})
