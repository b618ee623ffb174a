"""Reusable pydantic field types for configs: durations, byte sizes, secrets."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_FACTORS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """'250ms', '10s', '5m', '1h', '7d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '10s', '500ms', '5m'")
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e300 else math.inf  # float() of a 400-digit int raises
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_FACTORS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as '10s', '500ms', '5m', got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
}  # fmt: skip


def parse_byte_size(value: object) -> int:
    """'512MiB', '2GB', '100000' or an int -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '256MiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size_f = float(m.group(1)) * _SIZE_FACTORS[(m.group(2) or "B").upper()]
        if not math.isfinite(size_f):  # 400 digits of "MB": int(inf) would raise OverflowError
            raise ValueError(f"size out of range: {value[:40]!r}")
        size = int(size_f)
    else:
        raise ValueError(f"expected a size such as '256MiB' or '2GB', got {value!r}")
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda s: f"{s}s")]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]


def resolve_secret(*, value: str | None, file: Path | None, env: str | None, what: str) -> str | None:
    """A secret comes from a file (systemd LoadCredential, Docker secrets) or an env var.

    Inline values are allowed only through ``${ENV}`` substitution, which the
    config loader has already applied; the secret never appears in logs.
    """
    if file is not None:
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        path = file if file.is_absolute() or cred_dir is None else Path(cred_dir) / file
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{what}: cannot read secret file {path}: {exc.strerror}") from exc
    if env is not None:
        secret = os.environ.get(env)
        if secret is None:
            raise SecretError(f"{what}: environment variable {env} is not set")
        return secret
    return value


class SecretError(RuntimeError):
    """A configured secret could not be read. Raised at sink/driver start."""
