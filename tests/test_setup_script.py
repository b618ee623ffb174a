"""scripts/_setup.sh (behind scripts/demo, scripts/test, scripts/check): once set up, it needs no network."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The setup script and pyproject.toml beside a venv with no pip in it: any pip run fails."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "_setup.sh", tmp_path / "scripts" / "_setup.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True, timeout=60)
    return tmp_path


def _stamp(checkout: Path, extra: str, *, pyproject: bytes | None = None) -> None:
    digest = hashlib.sha256(pyproject or (checkout / "pyproject.toml").read_bytes()).hexdigest()
    (checkout / ".venv" / ".setup-stamp").write_text(f"{digest} {extra}\n", encoding="utf-8")


def _source(checkout: Path, extra: str) -> subprocess.CompletedProcess[str]:
    # PIP_NO_INDEX: the package index is unreachable, as on a site with no uplink.
    env = {**os.environ, "PIP_NO_INDEX": "1", "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", "-c", f'set -e; source scripts/_setup.sh "{extra}"; echo ready'],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("installed", "wanted"), [("", ""), ("test", ""), ("test", "test"), ("dev", "test")])
def test_an_installed_venv_is_used_as_it_is(checkout: Path, installed: str, wanted: str) -> None:
    _stamp(checkout, installed)
    done = _source(checkout, wanted)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ready\n", "")


def test_a_changed_pyproject_reinstalls(checkout: Path) -> None:
    _stamp(checkout, "test", pyproject=b"[project]\nname = 'older'\n")
    done = _source(checkout, "test")
    assert "installing the gateway into .venv" in done.stderr
    assert done.returncode != 0  # this venv has no pip: the reinstall was really attempted
    assert "ready" not in done.stdout


def test_a_missing_extra_is_installed(checkout: Path) -> None:
    _stamp(checkout, "")
    done = _source(checkout, "test")
    assert "installing the gateway into .venv" in done.stderr
