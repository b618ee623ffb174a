"""What a wheel carries: every package of the source tree, under the one top-level name `gateway`."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOTS = {"gateway": "gateway", "drivers": "gateway.drivers", "simulators": "gateway.simulators"}
NOT_SHIPPED = {"tests", "_template"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    tree = {"gateway.profile_files"}
    for folder, name in SOURCE_ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if NOT_SHIPPED.intersection(rel.parts):
                continue
            tree.add(".".join([name, *rel.parts]))
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    assert tree - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - tree == set(), "these are listed in pyproject.toml but have no __init__.py"


def test_entry_points_name_installed_modules_only() -> None:
    groups = _pyproject()["project"]["entry-points"]
    targets = [target for group in groups.values() for target in group.values()]
    assert targets
    assert all(t.startswith("gateway.") for t in targets), targets
