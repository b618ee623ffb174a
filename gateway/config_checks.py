"""Checks and fix-ups of a validated config that no single model can do on its own.

- relative paths resolve against the config file's folder, not the working directory
  (``gateway status -c /etc/gateway/gateway.toml`` must work from anywhere);
- secrets are never written inline, and secret files stay inside the credentials directory;
- settings that work but expose the box (metrics on every interface) are warned about;
- a device profile given to ``gateway check`` instead of a config is named as such.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from gateway.config_messages import ConfigProblem, key_path
from gateway.config_types import SecretFileMarker

Loc = tuple[int | str, ...]

# A `profile` given as a path (not a name) is a path too; drivers name that field `profile`.
_PATH_LIKE_STR_FIELDS = ("profile",)
_ENV_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")


def _has_marker(annotation: Any, metadata: list[Any]) -> bool:
    if any(isinstance(m, SecretFileMarker) for m in metadata):
        return True
    if typing.get_origin(annotation) is typing.Annotated:
        return any(isinstance(m, SecretFileMarker) for m in annotation.__metadata__)
    return any(_has_marker(arg, []) for arg in typing.get_args(annotation))


def _is_secret_file(field: FieldInfo) -> bool:
    return _has_marker(field.annotation, list(field.metadata))


def _mentions(annotation: Any, cls: type) -> bool:
    if annotation is cls:
        return True
    return any(_mentions(arg, cls) for arg in typing.get_args(annotation))


def secret_files(model: BaseModel, loc: Loc = ()) -> Iterator[tuple[Loc, Path]]:
    """Every secret file path set in ``model`` and the models below it, with its key path."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, Path) and _is_secret_file(field):
            yield (*loc, name), value
        for sub_loc, sub in _submodels(value, (*loc, name)):
            yield from secret_files(sub, sub_loc)


def _submodels(value: Any, loc: Loc) -> Iterator[tuple[Loc, BaseModel]]:
    if isinstance(value, BaseModel):
        yield loc, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if isinstance(item, BaseModel):
                yield (*loc, i), item


def _rebased(value: Any, base_dir: Path) -> Any:
    if isinstance(value, Path) and not value.is_absolute():
        return base_dir / value
    if isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
        return [_rebased(v, base_dir) for v in value]
    return value


def _is_path_string(value: Any) -> bool:
    return isinstance(value, str) and (value.endswith(".toml") or "/" in value) and not value.startswith("/")


def rebase_paths(model: BaseModel, base_dir: Path, secrets_dir: Path) -> None:
    """Make every relative path in ``model`` absolute: against ``base_dir`` (the config file's folder),
    secret files against ``secrets_dir`` (``$CREDENTIALS_DIRECTORY`` or ``<config folder>/credentials``)."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, Path) and _is_secret_file(field):
            new: Any = value if value.is_absolute() else secrets_dir / value
        elif name in _PATH_LIKE_STR_FIELDS and _is_path_string(value):
            new = str(base_dir / value)
        else:
            new = _rebased(value, base_dir)
        if new is not value:
            # Assigned through __dict__: some plugin models are frozen, and the value is already valid.
            model.__dict__[name] = new
        for _, sub in _submodels(getattr(model, name), ()):
            rebase_paths(sub, base_dir, secrets_dir)


def inline_secret_problems(model: type[BaseModel], original: dict[str, Any], loc: Loc) -> list[ConfigProblem]:
    """A secret field may only hold a ``${ENV}`` reference: the config file is not a safe place for it.

    ``original`` is the section as written, before ``${ENV}`` substitution.
    """
    problems = []
    for name, field in model.model_fields.items():
        if not _mentions(field.annotation, SecretStr):
            continue
        value = original.get(name)
        if value is None or (isinstance(value, str) and _ENV_ONLY.match(value)):
            continue
        alternatives = [f"{alt} = {example}" for alt, example in
                        ((f"{name}_file", f'"influx-{name}"' if name == "token" else f'"{name}"'),
                         (f"{name}_env", f'"{name.upper()}_VAR"')) if alt in model.model_fields]  # fmt: skip
        alternatives.append(f'{name} = "${{{name.upper()}_VAR}}"')
        problems.append(
            ConfigProblem(
                key_path((*loc, name)),
                f"a {name} is never written in the config file (it ends up in backups and support mails); "
                f"put it in a root-only file in /etc/gateway/credentials/ handed over by systemd LoadCredential= "
                f"and set {' or '.join(alternatives)} (docs/sinks.md#secrets)",
            )
        )
    return problems


def metrics_listen_warning(listen: str) -> ConfigProblem | None:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name: we cannot tell without DNS, and a name usually means a real interface
    return _exposed(listen)


def _exposed(listen: str) -> ConfigProblem:
    return ConfigProblem(
        "metrics.listen",
        f"{listen!r} serves the metrics to the network without authentication; keep the default "
        "'127.0.0.1:9108' and scrape on the box or through an SSH tunnel, or firewall the port (docs/deploy.md)",
    )


_PROFILE_KEYS = {"registers", "decoder", "default_unit_id", "default_baudrate", "codec", "references"}
_CONFIG_KEYS = {"gateway", "sources", "sinks", "buffer", "metrics", "log"}


def profile_not_config_problem(raw: dict[str, Any]) -> ConfigProblem | None:
    """``gateway check`` on a device profile would list its keys as unknown; say what the file is instead."""
    keys = set(raw)
    if keys & _CONFIG_KEYS or not keys & _PROFILE_KEYS:
        return None
    hint = sorted(keys & _PROFILE_KEYS)[0]
    return ConfigProblem(
        "",
        f"this is a device profile (it has {hint!r}), not a gateway config: a profile is used by naming it in "
        'a source, e.g. profile = "xy-md02"; check the gateway config that uses it '
        "(gateway check -c /etc/gateway/gateway.toml)",
    )


def default_name_warning(gateway: BaseModel) -> ConfigProblem | None:
    """``[gateway] name`` left out: the host name stands in, and a cloned SD-card image shares it.

    Not one of the config's own warnings (which every loader sees): ``gateway check`` prints it and
    ``gateway run`` logs it, where a technician can act on it.
    """
    if "name" in gateway.model_fields_set:
        return None
    return ConfigProblem(
        "gateway.name",
        f"not set, so the host name {getattr(gateway, 'name', '?')!r} is used: boxes made from one SD-card image "
        'share it and their readings merge into the same series. Set a name per box, e.g. name = "gw-07" '
        "(docs/fleet.md)",
    )
