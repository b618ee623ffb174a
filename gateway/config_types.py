"""Reusable pydantic field types for configs: durations, byte sizes, secrets."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePath
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer


class ConfigValueError(ValueError):
    """A validation error that names the key it is about, below the model that raises it.

    A model validator that raises a plain ``ValueError`` is reported at the model's own key path
    (``sources[0]``); this one is reported at ``sources[0].<loc>`` so the message has the
    ``file: key.path: message`` shape a technician can act on.
    """

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class ConfigValueErrors(ConfigValueError):
    """Several located problems of one section at once (a driver's ``validate`` reporting every device)."""

    def __init__(self, errors: list[ConfigValueError]) -> None:
        super().__init__((), "\n".join(str(e) for e in errors))
        self.errors = errors


class ConfigWarning(UserWarning):
    """Something in a config that works but should change (a deprecated key, a risky setting).

    A config model emits it with ``warnings.warn(ConfigWarning(...))``; the loader turns it into a
    warning line of ``gateway check`` and a log line at start, under the source's or sink's key path.
    ``loc`` is the key below that (e.g. ``("serial_port",)``).
    """

    def __init__(self, message: str, loc: tuple[int | str, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_FACTORS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
# The value itself is not repeated here: the config loader and the CLI add "(got ...)" once.
DURATION_HELP = "not a duration; write a number with a unit ms, s, m, h or d, e.g. '500ms', '10s', '5m', '1h'"
SIZE_HELP = "not a size; write a number with a unit B, KB, MB, GB, KiB, MiB or GiB, e.g. '256MiB', '2GB'"


def parse_duration(value: object) -> float:
    """'250ms', '10s', '5m', '1h', '7d' or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) if abs(value) < 1e300 else math.inf  # float() of a 400-digit int raises
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_FACTORS[m.group(2)]
    else:
        raise ValueError(DURATION_HELP)
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
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size_f = float(m.group(1)) * _SIZE_FACTORS[(m.group(2) or "B").upper()]
        if not math.isfinite(size_f):  # 400 digits of "MB": int(inf) would raise OverflowError
            raise ValueError(f"size out of range: {value[:40]!r}")
        size = int(size_f)
    else:
        raise ValueError(SIZE_HELP)
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda s: f"{s}s")]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]


class SecretFileMarker:
    """Marks a path field that names a secret file, so the loader can find and check every one."""


def _inside_credentials_dir(path: Path) -> Path:
    if not path.is_absolute() and ".." in PurePath(path).parts:
        raise ValueError(
            f"{str(path)!r} leaves the credentials directory; name the file only, e.g. 'influx-token' "
            "(it is looked up in $CREDENTIALS_DIRECTORY, see docs/sinks.md#secrets)"
        )
    return path


SecretFile = Annotated[Path, AfterValidator(_inside_credentials_dir), SecretFileMarker()]
"""A secret file: relative = under ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) and never
outside it (no ``..``); absolute paths (Docker secrets, ``/run/secrets/x``) are taken as they are."""


def secret_file_path(file: Path, base_dir: Path | None = None) -> Path:
    """Where a secret file is read: ``$CREDENTIALS_DIRECTORY`` if set, else the config file's folder."""
    if file.is_absolute():
        return file
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        return Path(cred_dir) / file
    return (base_dir / file) if base_dir is not None else file


def resolve_secret(*, value: str | None, file: Path | None, env: str | None, what: str) -> str | None:
    """A secret comes from a file (systemd LoadCredential, Docker secrets) or an env var.

    Inline values are allowed only through ``${ENV}`` substitution, which the
    config loader has already applied; the secret never appears in logs.
    """
    if file is not None:
        try:
            _inside_credentials_dir(file)
        except ValueError as exc:
            raise SecretError(f"{what}: {exc}") from exc
        path = secret_file_path(file)
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
