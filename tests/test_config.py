"""Config loading: key paths in errors, all errors at once, ${ENV}, secrets, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, build_config, load_config, parse_config
from gateway.config_types import SecretError, parse_byte_size, parse_duration, resolve_secret

GOOD = """
[gateway]
site = "north"
name = "gw-01"
state_dir = "/tmp/x"

[[sources]]
driver = "simulated"
name = "street"
interval = "5s"
devices = [{ name = "w", kind = "weather" }]
"""


def test_good_config_defaults_to_the_local_sink() -> None:
    config = parse_config(GOOD)
    assert config.site == "north" and config.gateway_name == "gw-01"
    assert [s.config.type for s in config.sinks] == ["local"]
    assert config.sources[0].config.interval == 5.0
    assert config.buffer_path == Path("/tmp/x/buffer.sqlite")


def test_every_error_is_reported_at_once_with_file_and_key_path() -> None:
    text = """
[gateway]
sitee = "typo"

[buffer]
overflow = "drop_everything"

[[sources]]
driver = "simulated"
name = "a"
devices = [{ name = "w", kind = "weather" }, { name = "x", kind = "plasma" }]

[[sources]]
driver = "nope"
name = "b"

[[sinks]]
type = "local"
retention = "forever"
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="site.toml")
    message = str(info.value)
    paths = [p.key_path for p in info.value.problems]
    assert "gateway.sitee" in paths
    assert "buffer.overflow" in paths
    assert "sources[0].devices[1].kind" in paths
    assert "sources[1].driver" in paths
    assert "sinks[0].retention" in paths
    assert all(line.startswith("site.toml: ") for line in message.splitlines())
    # Helpful details: the suggestion, the allowed values, the offending value.
    assert "did you mean 'site'?" in message
    assert "'drop_oldest'" in message and "drop_everything" in message
    assert "unknown driver 'nope'" in message and "simulated" in message


def test_duplicate_source_names_are_an_error() -> None:
    text = GOOD + '\n[[sources]]\ndriver = "simulated"\nname = "street"\ndevices = [{ name = "w" }]\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert [p.key_path for p in info.value.problems] == ["sources[1].name"]


def test_driver_validate_errors_carry_the_source_path() -> None:
    text = GOOD.replace('devices = [{ name = "w", kind = "weather" }]', 'devices = [{ name = "w" }, { name = "w" }]')
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems[0].key_path == "sources[0]"
    assert "duplicate device names" in info.value.problems[0].message


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^bad\.toml: not valid TOML"):
        parse_config("[gateway\nsite=1", source="bad.toml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "absent.toml")


def test_env_substitution_and_missing_variables() -> None:
    raw = {"gateway": {"site": "${SITE}", "name": "${GW:-fallback}"}, "sinks": [{"type": "local", "name": "${NAME}"}]}
    config = build_config(raw, env={"SITE": "harbour", "NAME": "store"})
    assert config.site == "harbour" and config.gateway_name == "fallback"
    assert config.sinks[0].config.sink_name == "store"
    with pytest.raises(ConfigError) as info:
        build_config(raw, env={})
    assert {p.key_path for p in info.value.problems} == {"gateway.site", "sinks[0].name"}
    assert "environment variable SITE is not set" in str(info.value)


def test_env_values_cannot_inject_toml() -> None:
    config = parse_config('[gateway]\nsite = "${SITE}"\n', env={"SITE": 'x"\n[buffer]\nmax_bytes = 1'})
    assert config.site.startswith('x"')
    assert config.base.buffer.max_bytes == 256 * 1024**2


def test_durations_and_sizes() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("5m") == 300 and parse_duration(7) == 7.0 and parse_duration("1d") == 86400
    assert parse_byte_size("256MiB") == 256 * 1024**2 and parse_byte_size("2GB") == 2_000_000_000
    for bad in ("fast", "-1s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_byte_size("lots")


def test_secrets_from_file_env_and_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    assert resolve_secret(value=None, file=tmp_path / "token", env=None, what="t") == "s3cret"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_secret(value=None, file=Path("token"), env=None, what="t") == "s3cret"
    monkeypatch.setenv("MY_TOKEN", "from-env")
    assert resolve_secret(value=None, file=None, env="MY_TOKEN", what="t") == "from-env"
    with pytest.raises(SecretError, match="NOT_SET is not set"):
        resolve_secret(value=None, file=None, env="NOT_SET", what="t")
    with pytest.raises(SecretError, match="cannot read secret file"):
        resolve_secret(value=None, file=tmp_path / "missing", env=None, what="t")


def test_every_shipped_sample_and_example_config_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    files = sorted(root.glob("drivers/*/sample.toml")) + sorted(root.glob("config/*.toml"))
    files = [f for f in files if "_template" not in f.parts]
    assert len(files) >= 2
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    for f in files:
        try:
            load_config(f, env={"HOME": str(tmp_path)})
        except ConfigError as exc:
            pytest.fail(f"shipped config {f.relative_to(root)} is invalid:\n{exc}")
