"""Load and validate the one TOML config file.

Each driver and sink contributes its own pydantic model (found through entry
points); this module stitches them together, substitutes ``${ENV}``
references, and reports every error at once with the file and the key path,
e.g. ``gateway.toml: sources[2].registers[5].type: 'flot32' is not allowed;
allowed: 'int16', 'uint16', ...``.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway import plugins
from gateway.config_types import ByteSize, Duration
from gateway.driver import Driver, SourceConfig
from gateway.sink import Sink, SinkConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewaySection(_Section):
    site: str = Field(default="default-site", min_length=1)
    name: str = Field(default_factory=socket.gethostname, min_length=1)
    state_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("STATE_DIRECTORY", "state").split(":")[0]),
        description="where the buffer and the local store live (systemd sets STATE_DIRECTORY)",
    )


class BufferSection(_Section):
    path: Path | None = Field(default=None, description="default: <state_dir>/buffer.sqlite")
    max_bytes: ByteSize = 256 * 1024**2
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    sync: Literal["full", "normal"] = "full"
    flush_interval: Duration = Field(default=0.2, gt=0, le=10)
    flush_max_readings: int = Field(default=10_000, ge=1)


class MetricsSection(_Section):
    enabled: bool = True
    listen: str = Field(default="127.0.0.1:9108", pattern=r"^[^\s:]*:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$")


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class GatewayConfig(_Section):
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    buffer: BufferSection = Field(default_factory=BufferSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    log: LogSection = Field(default_factory=LogSection)
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

    @property
    def site(self) -> str:
        return self.base.gateway.site

    @property
    def gateway_name(self) -> str:
        return self.base.gateway.name

    @property
    def buffer_path(self) -> Path:
        return self.base.buffer.path or self.base.gateway.state_dir / "buffer.sqlite"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}" if self.key_path else self.message


class ConfigError(Exception):
    """All problems of one config file. ``str()`` is ready to show a technician."""

    def __init__(self, file: str, problems: list[ConfigProblem]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {p}" for p in problems]
        super().__init__("\n".join(lines))


# --- key paths and messages -------------------------------------------------


def key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (for 'allowed keys' hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _unwrap_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def problems_from_validation(
    exc: ValidationError, model: type[BaseModel], prefix: tuple[int | str, ...] = ()
) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            allowed = sorted(owner.model_fields) if owner else []
            message = "unknown key"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            # Never echo a whole section (it may hold a token) nor anything under a secret-like key.
            secret = any(isinstance(p, str) and any(w in p.lower() for w in ("token", "password", "secret", "key"))
                         for p in loc)  # fmt: skip
            if "input" in err and not isinstance(err["input"], dict | list) and not secret:
                message += f" (got {err['input']!r})"
        problems.append(ConfigProblem(key_path(prefix + loc), message))
    return problems


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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read the file: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"not UTF-8 text (byte {exc.start})")]) from exc
    return parse_config(text, source=str(path), path=path, env=env)


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
    problems: list[ConfigProblem] = []
    raw = substitute_env(raw, os.environ if env is None else env, (), problems)

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

    sources = _load_plugins(base.sources, "sources", "driver", plugins.DRIVERS, SourceConfig, problems)
    seen: dict[str, int] = {}
    for i, src in enumerate(sources):
        name = src.config.name
        if name in seen:
            problems.append(ConfigProblem(f"sources[{i}].name", f"{name!r} is already used by sources[{seen[name]}]"))
        seen[name] = i

    sink_dicts = base.sinks or [DEFAULT_SINK]
    sinks = _load_plugins(sink_dicts, "sinks", "type", plugins.SINKS, SinkConfig, problems)
    sink_seen: dict[str, int] = {}
    for i, snk in enumerate(sinks):
        name = snk.config.sink_name
        if name in sink_seen:
            problems.append(
                ConfigProblem(f"sinks[{i}].name", f"{name!r} is already used by sinks[{sink_seen[name]}]; set a name")
            )
        sink_seen[name] = i

    if problems:
        raise ConfigError(source, problems)
    return Config(
        path=path,
        base=base,
        sources=tuple(typing.cast(list[LoadedSource], sources)),
        sinks=tuple(typing.cast(list[LoadedSink], sinks)),
    )


def _load_plugins(
    items: list[dict[str, Any]],
    section: str,
    kind_key: str,
    group: str,
    base_model: type[BaseModel],
    problems: list[ConfigProblem],
) -> list[Any]:
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
        try:
            cfg = model.model_validate(item)
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, model, loc))
            continue
        if group == plugins.DRIVERS:
            try:
                cls.validate(cfg)
            except ValueError as exc:
                problems.append(ConfigProblem(key_path(loc), str(exc)))
                continue
            loaded.append(LoadedSource(cfg, cls))
        else:
            loaded.append(LoadedSink(cfg, cls))
    return loaded
