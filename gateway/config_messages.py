"""Turn pydantic validation errors into messages in the project's words.

Every message says what is wrong, what is allowed and, where it helps, gives an
example; the key path (``sources[2].registers[5].type``) comes first, the value
the technician wrote last, once: ``'flot32' is not allowed; allowed: 'int16', ... (got 'flot32')``.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from gateway.config_types import ConfigValueError

# Never echo a value under one of these keys (it may be a secret), nor a whole section.
_SECRET_WORDS = ("token", "password", "secret", "key")

# Names other tools (or our own older docs) use for a key; difflib cannot see these.
_SYNONYMS = {
    "serial_port": "port", "serial": "port", "tty": "port", "device_path": "port",
    "baud": "baudrate", "baud_rate": "baudrate", "speed": "baudrate",
    "slave_id": "unit_id", "slave": "unit_id", "unit": "unit_id", "device_id": "unit_id", "address_id": "unit_id",
    "password": "password_file", "token": "token_file",
    "server_url": "url", "endpoint": "url",
    "period": "interval", "poll_interval": "interval", "every": "interval",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    key_path: str
    message: str

    def __str__(self) -> str:
        return f"{self.key_path}: {self.message}" if self.key_path else self.message


def key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
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


def _field_at(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> FieldInfo | None:
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return None
    owner = _model_at(model, tuple(loc[: max(i for i, p in enumerate(loc) if isinstance(p, str))]))
    return owner.model_fields.get(names[-1]) if owner else None


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    return any(isinstance(p, str) and any(w in p.lower() for w in _SECRET_WORDS) for p in loc)


def _hint(field: FieldInfo | None) -> str:
    return f" ({field.description})" if field is not None and field.description else ""


def _message(err: Any, model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> tuple[tuple[int | str, ...], str]:
    """(key path below the model, message without the value)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    field = _field_at(model, loc)
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = sorted(owner.model_fields) if owner else []
        message = "unknown key"
        synonym = _SYNONYMS.get(str(loc[-1]).lower())
        close = [synonym] if synonym in allowed else difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        if allowed:
            message += f" (allowed: {', '.join(allowed)})"
        return loc, message
    if kind == "missing":
        return loc, "required key is missing" + _hint(field)
    if kind == "value_error":
        error = ctx.get("error")
        if isinstance(error, ConfigValueError):
            return (*loc, *error.loc), error.message
        return loc, str(error) if error is not None else err["msg"].removeprefix("Value error, ")
    if kind == "union_tag_invalid":
        key = str(ctx.get("discriminator", "type")).strip("'")
        return (*loc, key), f"not allowed; allowed: {ctx.get('expected_tags', '?')} (got {ctx.get('tag')!r})"
    if kind == "union_tag_not_found":
        key = str(ctx.get("discriminator", "type")).strip("'")
        return (*loc, key), "required key is missing"
    if kind == "literal_error":
        return loc, f"not allowed; allowed: {ctx.get('expected', '?')}"
    if kind == "string_pattern_mismatch":
        # pydantic would show the regular expression; the field's description says it in words
        return loc, "does not have the expected form" + _hint(field)
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return loc, "expected a whole number" + _hint(field)
    if kind in ("float_parsing", "float_type"):
        return loc, "expected a number" + _hint(field)
    if kind in ("bool_parsing", "bool_type"):
        return loc, "expected true or false"
    if kind in ("string_type",):
        return loc, "expected a text in quotes" + _hint(field)
    if kind in ("list_type",):
        return loc, "expected a list [ ... ]" + _hint(field)
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return loc, "expected a table { ... }" + _hint(field)
    return loc, err["msg"]


def problems_from_validation(
    exc: ValidationError,
    model: type[BaseModel] | None,
    prefix: tuple[int | str, ...] = (),
    *,
    skip: tuple[str, ...] = (),
) -> list[ConfigProblem]:
    """One problem per error. ``model`` (if known) gives allowed keys and field descriptions for hints;
    ``skip``: loc parts that are not keys the technician wrote (a tagged union's tag)."""
    problems = []
    for err in exc.errors(include_url=False):
        loc, message = _message(err, model, tuple(p for p in err["loc"] if p not in skip))
        value = err.get("input")
        if (
            err["type"] not in ("extra_forbidden", "missing")
            and "input" in err
            and not isinstance(value, dict | list)
            and not _is_secret(loc)
            and repr(value) not in message
        ):
            message += f" (got {value!r})"
        problem = ConfigProblem(key_path(prefix + loc), message)
        if problem not in problems:
            problems.append(problem)
    return problems
