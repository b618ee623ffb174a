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
    with pytest.raises(ConfigError, match=r"gw.toml: not UTF-8 text \(byte 21\)"):
        load_config(path)
