"""Checks of a valid config against the machine: files and folders it names.

Config validation is pure; these look at the disk. ``gateway check`` reports
them as warnings (it may run as another user, before the credentials exist);
``gateway run`` refuses to start on any of them with exit 2 and one line each,
instead of a traceback and a restart loop.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from gateway.config import Config
from gateway.config_checks import secret_files
from gateway.config_messages import ConfigProblem, key_path

SQLITE_HEADER = b"SQLite format 3\x00"


def preflight(config: Config, *, create: bool) -> list[ConfigProblem]:
    """Problems that would stop the daemon. ``create``: make the state directory (``gateway run``)."""
    problems = [*_secret_file_problems(config, strict=create)]
    state = _state_dir_problem(config.base.gateway.state_dir, create=create)
    if state is not None:
        problems.append(state)
    for where, path in (("buffer.path", config.buffer_path), *_local_store_paths(config)):
        problem = _sqlite_file_problem(where, path)
        if problem is not None:
            problems.append(problem)
    return problems


def _secret_file_problems(config: Config, *, strict: bool) -> list[ConfigProblem]:
    problems = []
    sections: list[tuple[tuple[int | str, ...], BaseModel]] = [
        (("sources", i), s.config) for i, s in enumerate(config.sources)
    ]
    sections += [(("sinks", i), s.config) for i, s in enumerate(config.sinks)]
    if config.base.fleet is not None:
        sections.append((("fleet",), config.base.fleet))
    for loc, model in sections:
        for file_loc, path in secret_files(model, loc):
            try:
                with path.open("rb"):
                    pass
            except FileNotFoundError:
                problems.append(ConfigProblem(key_path(file_loc), _missing_secret(path)))
            except PermissionError:
                # `gateway check` as the service user cannot look into the root-only credentials
                # folder; systemd reads it as root at start, so only `run` can tell.
                if strict:
                    problems.append(ConfigProblem(key_path(file_loc), _unreadable_secret(path)))
            except OSError as exc:
                problems.append(ConfigProblem(key_path(file_loc), f"cannot read {path}: {exc.strerror}"))
    return problems


def _unreadable_secret(path: Path) -> str:
    return (f"cannot read {path}: permission denied; under systemd hand it over with LoadCredential="
            f"{path.name}:{path} (sudo systemctl edit gateway; docs/deploy.md, step 6)")  # fmt: skip


def _missing_secret(path: Path) -> str:
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return (f"{path} does not exist: add LoadCredential={path.name}:/etc/gateway/credentials/{path.name} "
                "(sudo systemctl edit gateway) and create that file (docs/deploy.md, step 6)")  # fmt: skip
    return (f"{path} does not exist: create it (docs/deploy.md, step 6); under systemd the file comes from "
            "LoadCredential= instead")  # fmt: skip


def _state_dir_problem(state_dir: Path, *, create: bool) -> ConfigProblem | None:
    where = "gateway.state_dir"
    fix = f"create it (sudo install -d -o gateway -g gateway {state_dir}) or set [gateway] state_dir"
    if state_dir.exists() and not state_dir.is_dir():
        return ConfigProblem(where, f"{state_dir} is a file, not a folder; {fix}")
    if create:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return ConfigProblem(where, f"cannot create {state_dir}: {exc.strerror}; {fix}")
        if not os.access(state_dir, os.W_OK | os.X_OK):
            return ConfigProblem(where, f"{state_dir} is not writable by this user; {fix}")
        return None
    existing = state_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is not writable" if existing == state_dir else f"cannot be created here ({existing} is not writable)"
        return ConfigProblem(where, f"{state_dir} {verb} by this user; {fix}")
    return None


def _local_store_paths(config: Config) -> list[tuple[str, Path]]:
    out = []
    for i, sink in enumerate(config.sinks):
        path = getattr(sink.config, "path", None)
        if sink.config.type == "local" and isinstance(path, Path):
            out.append((f"sinks[{i}].path", path))
    return out


def _sqlite_file_problem(where: str, path: Path) -> ConfigProblem | None:
    """A buffer or store path that points at something else (a text file, a folder) would be a traceback."""
    if path.is_dir():
        return ConfigProblem(where, f"{path} is a folder; give a file name, e.g. {path / 'buffer.sqlite'}")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return None  # created at start
    except OSError as exc:
        return ConfigProblem(where, f"cannot read {path}: {exc.strerror}")
    if head and head != SQLITE_HEADER:
        return ConfigProblem(
            where, f"{path} is not an SQLite database (another file is in the way); point {where} at a new file name"
        )
    return None
