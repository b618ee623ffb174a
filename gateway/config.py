"""Load and validate the one TOML config file.

Each driver and sink contributes its own pydantic model (found through entry
points); this module stitches them together, substitutes ``${ENV}``
references, and reports every error at once with the file and the key path,
e.g. ``gateway.toml: sources[2].registers[5].type: 'flot32' is not allowed;
allowed: 'int16', 'uint16', ...``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from gateway import config_checks, plugins, routing_catalogue
from gateway.config_messages import ConfigProblem, key_path, problems_from_validation
from gateway.config_types import ByteSize, ConfigValueError, ConfigValueErrors, ConfigWarning, Duration
from gateway.driver import Driver, SourceConfig
from gateway.fleet.settings import FleetSection
from gateway.sink import Sink, SinkConfig

__all__ = [
    "Config",
    "ConfigError",
    "ConfigProblem",
    "GatewayConfig",
    "LoadedSink",
    "LoadedSource",
    "build_config",
    "key_path",
    "load_config",
    "parse_config",
    "problems_from_validation",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewaySection(_Section):
    site: str = Field(default="default-site", min_length=1)
    name: str = Field(default_factory=socket.gethostname, min_length=1)
    state_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("STATE_DIRECTORY", "state").split(":")[0]),
        description="where the buffer and the local store live (systemd sets STATE_DIRECTORY); "
        "a relative path is under the config file's folder",
    )
    stall_timeout: Duration = Field(
        default=120.0,
        gt=0,
        description="stop feeding the systemd watchdog when data has not moved this long (docs/deploy.md)",
    )
    poll_phase: float | Literal["auto"] = Field(
        default="auto",
        description="where in each interval this gateway polls, as a fraction in [0, 1) of the interval; "
        "'auto': fixed per gateway, derived from its identity, so a fleet does not poll in one burst (docs/fleet.md)",
    )

    @field_validator("poll_phase")
    @classmethod
    def _phase_in_range(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and not 0 <= value < 1:
            raise ValueError("a fraction of the interval: 0 (on the wall-clock grid) up to, not including, 1")
        return value


class BufferSection(_Section):
    path: Path | None = Field(default=None, description="default: <state_dir>/buffer.sqlite")
    max_bytes: ByteSize = 256 * 1024**2
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    sync: Literal["full", "normal"] = "full"
    flush_interval: Duration = Field(
        default=0.2, gt=0, le=10, description="longest gap between two commits under load (idle: commit at once)"
    )
    flush_max_readings: int = Field(default=10_000, ge=1, description="commit as soon as this many are waiting")


class MetricsSection(_Section):
    enabled: bool = True
    listen: str = Field(
        default="127.0.0.1:9108",
        pattern=r"^[^\s:]*:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$",
        description="HOST:PORT, e.g. '127.0.0.1:9108' or '[::1]:9108'",
    )


class WebSection(_Section):
    """The status page and its JSON API (gateway/web/, docs/web.md), served by the daemon itself."""

    enabled: bool = True
    password_file: Path | None = Field(
        default=None,
        description="required unless listen is on loopback; relative paths are under $CREDENTIALS_DIRECTORY",
    )
    listen: str = Field(default="127.0.0.1:8080", pattern=r"^[^\s:]*:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")
    history_step: Duration = Field(default=10.0, ge=1, le=60, description="one in-memory point per series per step")

    @field_validator("listen")
    @classmethod
    def _auth_off_loopback(cls, listen: str, info: ValidationInfo) -> str:
        # The page shows the site's devices and errors: only the box itself may read it without a password.
        if info.data.get("enabled", True) and info.data.get("password_file") is None and not is_loopback(listen):
            raise ValueError(
                f"{listen!r} is reachable from the network, so the page needs a password: set web.password_file "
                "(a file, or a systemd credential, holding it; never inline) or listen on 127.0.0.1"
            )
        return listen


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", "0.0.0.0" is an address, a host name may resolve anywhere


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class GatewayConfig(_Section):
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    buffer: BufferSection = Field(default_factory=BufferSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    web: WebSection = Field(default_factory=WebSection)
    log: LogSection = Field(default_factory=LogSection)
    fleet: FleetSection | None = Field(default=None, description="status to the control post (docs/fleet.md)")
    sources: list[dict[str, Any]] = Field(default_factory=list)
    sinks: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LoadedSource:
    config: SourceConfig
    driver_class: type[Driver]


@dataclass(frozen=True, slots=True)
class LoadedSink:
    config: SinkConfig
    sink_class: type[Sink]


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    base: GatewayConfig
    sources: tuple[LoadedSource, ...]
    sinks: tuple[LoadedSink, ...]
    # Things that work but should change (deprecated keys, metrics open to the network):
    # `gateway check` prints them, `gateway run` logs them once at start.
    warnings: tuple[ConfigProblem, ...] = ()

    @property
    def site(self) -> str:
        return self.base.gateway.site

    @property
    def gateway_name(self) -> str:
        return self.base.gateway.name

    @property
    def buffer_path(self) -> Path:
        return self.base.buffer.path or self.base.gateway.state_dir / "buffer.sqlite"


class ConfigError(Exception):
    """All problems of one config file. ``str()`` is ready to show a technician."""

    def __init__(self, file: str, problems: list[ConfigProblem]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {p}" for p in problems]
        super().__init__("\n".join(lines))


# --- ${ENV} substitution ------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(
    node: Any, env: typing.Mapping[str, str], loc: tuple[int | str, ...], problems: list[ConfigProblem]
) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string value.

    Done on the parsed tree, not the raw text, so a value can never inject TOML.
    """
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(ConfigProblem(key_path(loc), f"environment variable {name} is not set"))
            return ""

        return _ENV_REF.sub(repl, node)
    if isinstance(node, dict):
        return {k: substitute_env(v, env, (*loc, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, env, (*loc, i), problems) for i, v in enumerate(node)]
    return node


# --- loading ----------------------------------------------------------------

DEFAULT_SINK: dict[str, Any] = {"type": "local"}


def load_config(path: str | Path, *, env: typing.Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read the file: {exc.strerror}")]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [_not_utf8(data, exc)]) from exc
    return parse_config(text, source=str(path), path=path, env=env)


def _not_utf8(data: bytes, exc: UnicodeDecodeError) -> ConfigProblem:
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return ConfigProblem(
        f"line {line}",
        f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); save the file as UTF-8, "
        f"e.g. iconv -f latin1 -t utf-8 old.toml > gateway.toml",
    )


def parse_config(
    text: str, *, source: str = "<config>", path: Path | None = None, env: typing.Mapping[str, str] | None = None
) -> Config:
    try:
        raw = tomllib.loads(text)
    except RecursionError as exc:  # tomllib recurses per level: "a = [[[[..." 1000 deep
        raise ConfigError(source, [ConfigProblem("", "not valid TOML: nested too deeply")]) from exc
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {str(exc)[:200]}")]) from exc
    return build_config(raw, source=source, path=path, env=env)


def build_config(
    raw: dict[str, Any],
    *,
    source: str = "<config>",
    path: Path | None = None,
    env: typing.Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed config. Relative paths in it resolve against ``path``'s folder when given."""
    problems: list[ConfigProblem] = []
    warnings_: list[ConfigProblem] = []
    env = os.environ if env is None else env
    not_a_config = config_checks.profile_not_config_problem(raw)
    if not_a_config is not None:
        raise ConfigError(source, [not_a_config])
    written = raw
    raw = substitute_env(raw, env, (), problems)

    try:
        base = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems.extend(problems_from_validation(exc, GatewayConfig))
        # Keep going with the sources and sinks, to report their problems too; an
        # entry that is not a table (already reported above) stands as an empty one.
        base = GatewayConfig.model_validate(
            {
                k: [item if isinstance(item, dict) else {} for item in v]
                for k, v in raw.items()
                if k in ("sources", "sinks") and isinstance(v, list)
            }
        )
    if base.metrics.enabled and (exposed := config_checks.metrics_listen_warning(base.metrics.listen)):
        warnings_.append(exposed)
    if isinstance(written.get("fleet"), dict):
        problems.extend(config_checks.inline_secret_problems(FleetSection, written["fleet"], ("fleet",)))
    context = _LoadContext(path, env, problems, warnings_)
    if path is not None:
        config_checks.rebase_paths(base, context.base_dir, context.secrets_dir)

    sources = _load_plugins(base.sources, _written_list(written, "sources"), "sources", "driver", plugins.DRIVERS,
                            context)  # fmt: skip
    seen: dict[str, int] = {}
    for i, src in enumerate(sources):
        name = src.config.name
        if name in seen:
            problems.append(ConfigProblem(f"sources[{i}].name", f"{name!r} is already used by sources[{seen[name]}]"))
        seen[name] = i

    sink_dicts = base.sinks or [DEFAULT_SINK]
    sinks = _load_plugins(sink_dicts, _written_list(written, "sinks"), "sinks", "type", plugins.SINKS, context)
    sink_seen: dict[str, int] = {}
    for i, snk in enumerate(sinks):
        name = snk.config.sink_name
        if name in sink_seen:
            problems.append(
                ConfigProblem(f"sinks[{i}].name", f"{name!r} is already used by sinks[{sink_seen[name]}]; set a name")
            )
        sink_seen[name] = i
    if len(sinks) == len(sink_dicts):  # the key paths below are indices of sink_dicts
        _check_routes(sources, sinks, problems, warnings_)

    if problems:
        raise ConfigError(source, problems)
    return Config(
        path=path,
        base=base,
        sources=tuple(typing.cast(list[LoadedSource], sources)),
        sinks=tuple(typing.cast(list[LoadedSink], sinks)),
        warnings=tuple(warnings_),
    )


def _check_routes(
    sources: list[Any], sinks: list[Any], problems: list[ConfigProblem], warnings_: list[ConfigProblem]
) -> None:
    """Routing rules that can match nothing are refused (gateway/routing_catalogue.py)."""
    catalogue = routing_catalogue.SourceCatalogue.of(sources)
    for i, snk in enumerate(sinks):
        problems.extend(routing_catalogue.rule_problems(snk, i, catalogue))
        warnings_.extend(routing_catalogue.routing_warnings(snk, i, catalogue))


@dataclass(slots=True)
class _LoadContext:
    path: Path | None
    env: typing.Mapping[str, str]
    problems: list[ConfigProblem]
    warnings: list[ConfigProblem]

    @property
    def base_dir(self) -> Path:
        return (self.path or Path("gateway.toml")).absolute().parent

    @property
    def secrets_dir(self) -> Path:
        cred_dir = self.env.get("CREDENTIALS_DIRECTORY")
        return Path(cred_dir) if cred_dir else self.base_dir / "credentials"


def _written_list(written: dict[str, Any], section: str) -> list[Any]:
    value = written.get(section)
    return value if isinstance(value, list) else []


def _validate_collecting(
    model: type[BaseModel], item: dict[str, Any], loc: tuple[int | str, ...], context: _LoadContext
) -> BaseModel | None:
    """Validate one section; report every error, even those hidden behind an unknown key.

    Pydantic stops a model at its field errors, so a typo'd key would hide the model's own checks (and
    the driver's ``validate``): the section is validated again without the unknown keys to find them.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        try:
            cfg = model.model_validate(item)
        except ValidationError as exc:
            context.problems.extend(problems_from_validation(exc, model, loc))
            unknown = [tuple(e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
            cfg = None
            if unknown and len(unknown) == len(exc.errors()):
                try:
                    cfg = model.model_validate(_without(item, unknown))
                except ValidationError as again:
                    for problem in problems_from_validation(again, model, loc):
                        if problem not in context.problems:
                            context.problems.append(problem)
                # still an error: the unknown keys were reported; keep checking what is left
    for w in caught:
        if isinstance(w.message, ConfigWarning):
            context.warnings.append(ConfigProblem(key_path((*loc, *w.message.loc)), w.message.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cfg


def _without(item: Any, locs: list[tuple[int | str, ...]]) -> Any:
    """A copy of ``item`` without the keys at ``locs``."""
    if isinstance(item, dict):
        drop = {loc[0] for loc in locs if len(loc) == 1}
        return {k: _without(v, [loc[1:] for loc in locs if len(loc) > 1 and loc[0] == k])
                for k, v in item.items() if k not in drop}  # fmt: skip
    if isinstance(item, list):
        return [_without(v, [loc[1:] for loc in locs if len(loc) > 1 and loc[0] == i]) for i, v in enumerate(item)]
    return item


def _load_plugins(
    items: list[dict[str, Any]],
    written: list[Any],
    section: str,
    kind_key: str,
    group: str,
    context: _LoadContext,
) -> list[Any]:
    problems = context.problems
    loaded: list[Any] = []
    for i, item in enumerate(items):
        loc: tuple[int | str, ...] = (section, i)
        kind = item.get(kind_key)
        if not isinstance(kind, str):
            available = ", ".join(plugins.names(group))
            problems.append(ConfigProblem(key_path((*loc, kind_key)), f"required; one of: {available}"))
            continue
        try:
            cls = plugins.load(group, kind)
        except plugins.PluginError as exc:
            problems.append(ConfigProblem(key_path((*loc, kind_key)), str(exc)))
            continue
        model = cls.config_model
        original = written[i] if i < len(written) and isinstance(written[i], dict) else {}
        secrets_inline = config_checks.inline_secret_problems(model, original, loc)
        problems.extend(secrets_inline)
        cfg = _validate_collecting(model, item, loc, context)
        if cfg is None:
            continue
        if context.path is not None:
            config_checks.rebase_paths(cfg, context.base_dir, context.secrets_dir)
        if group == plugins.DRIVERS:
            try:
                cls.validate(cfg)
            except ConfigValueError as exc:
                each = exc.errors if isinstance(exc, ConfigValueErrors) else [exc]
                problems.extend(ConfigProblem(key_path((*loc, *e.loc)), e.message) for e in each)
                continue
            except ValueError as exc:
                problems.append(ConfigProblem(key_path(loc), str(exc)))
                continue
            loaded.append(LoadedSource(typing.cast(SourceConfig, cfg), cls))
        else:
            loaded.append(LoadedSink(typing.cast(SinkConfig, cfg), cls))
    return loaded
