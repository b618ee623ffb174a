"""Device profiles: device knowledge as TOML data, not code.

A profile is ``<name>.toml`` in one of the profile directories, searched in order:
1. every directory in ``$GATEWAY_PROFILES`` (``:``-separated),
2. ``/etc/gateway/profiles`` (the technician's own profiles),
3. the profiles shipped with the gateway (``config/profiles/`` in the source tree, installed as the
   package ``gateway.profile_files`` and found with ``importlib.resources`` whatever the install).
The first match wins, so a site can override a shipped profile by name.
Each driver validates the profile's contents with its own pydantic model.
"""

from __future__ import annotations

import os
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

# A wheel or a Debian package installs the profiles as a plain folder, and an editable install maps
# the package onto config/profiles: either way it is a real directory.
SHIPPED_DIR = Path(str(files("gateway.profile_files")))
SYSTEM_DIR = Path("/etc/gateway/profiles")


class ProfileError(LookupError):
    pass


def search_dirs(extra: list[Path] | None = None) -> list[Path]:
    dirs = list(extra or [])
    env = os.environ.get("GATEWAY_PROFILES", "")
    dirs += [Path(p) for p in env.split(":") if p]
    dirs.append(SYSTEM_DIR)
    dirs.append(SHIPPED_DIR)
    return dirs


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system (ENAMETOOLONG), an unreadable directory
        return False


def find_profile(name: str, extra: list[Path] | None = None) -> Path:
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if _is_file(path):
            return path
        raise ProfileError(f"profile file {name[:200]} does not exist")
    for directory in search_dirs(extra):
        candidate = directory / f"{name}.toml"
        if _is_file(candidate):
            return candidate
    available = ", ".join(list_profiles(extra)) or "none"
    raise ProfileError(f"no profile named {name[:80]!r}; available: {available}")


def load_profile(name: str, extra: list[Path] | None = None) -> tuple[Path, dict[str, Any]]:
    path = find_profile(name, extra)
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    except RecursionError as exc:
        raise ProfileError(f"{path}: not valid TOML: nested too deeply") from exc
    except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise ProfileError(f"{path}: not valid TOML: {str(exc)[:200]}") from exc


def list_profiles(extra: list[Path] | None = None) -> list[str]:
    found: set[str] = set()
    for directory in search_dirs(extra):
        if directory.is_dir():
            found.update(p.stem for p in directory.glob("*.toml"))
    return sorted(found)
