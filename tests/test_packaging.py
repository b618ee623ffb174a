"""What a wheel carries: the one top-level package `gateway`, with the drivers, simulators and profiles."""

from __future__ import annotations

import tomllib
from pathlib import Path

import gateway.drivers
import gateway.profile_files
import gateway.simulators

ROOT = Path(__file__).resolve().parent.parent


def test_the_source_folders_are_linked_into_the_package() -> None:
    # The product's layout keeps drivers/, simulators/ and config/profiles/ at the top; the package reaches
    # them through these links, so setuptools, pytest and mypy all see one plain package.
    for link, target in (("drivers", "drivers"), ("simulators", "simulators"), ("profile_files", "config/profiles")):
        path = ROOT / "gateway" / link
        assert path.is_symlink(), f"gateway/{link} must be a symbolic link to {target}/"
        assert path.resolve() == (ROOT / target).resolve()
    assert Path(gateway.drivers.__file__).resolve().parent == (ROOT / "drivers").resolve()
    assert Path(gateway.simulators.__file__).resolve().parent == (ROOT / "simulators").resolve()
    assert (Path(gateway.profile_files.__file__).parent / "eastron-sdm630.toml").is_file()


def test_entry_points_name_installed_modules_only() -> None:
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    targets = [target for group in groups.values() for target in group.values()]
    assert targets
    for target in targets:
        module = target.split(":")[0]
        assert module.startswith("gateway."), target
        assert (ROOT / Path(*module.split("."))).with_suffix(".py").exists() or (
            ROOT / Path(*module.split(".")) / "__init__.py"
        ).exists(), f"{target}: no such module in the source tree"
