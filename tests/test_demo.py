"""`gateway demo` as a person sees it: a bounded table under a banner that stays, and no state left behind."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.demo import CLEAR, latest_rows
from gateway.sinks.local import StoredPoint
from tests.sample import reading


def test_moving_gps_tags_do_not_add_rows() -> None:
    # Every fix tags the particulate readings with a new position: each one is a new series in the store.
    points = [
        StoredPoint(i, reading(i, device="pms", quantity="pm2_5", tags={"lat": f"53.{i}", "lon": "-6.5"}))
        for i in range(50)
    ] + [StoredPoint(100, reading(0, device="pms", quantity="pm10"))]
    rows = latest_rows(points, now_ns=points[-2].reading.ts_ns)
    assert [(r[0], r[1]) for r in rows] == [("pms", "pm10"), ("pms", "pm2_5")]
    newest = rows[1]
    assert newest[2] == "32.25"  # the value of the newest series (i = 49)
    assert newest[6] == "lat=53.49,lon=-6.5 (+49 series)"


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "demo", *args], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip


def _state_dir(output: str) -> Path:
    found = re.search(r"state in (\S+)", output)
    assert found, output[-2000:]
    return Path(found.group(1))


@pytest.mark.slow
def test_temporary_state_is_removed_on_exit() -> None:
    done = _demo("--duration", "3", "--plain")
    assert done.returncode == 0, done.stderr[-2000:]
    state = _state_dir(done.stdout)
    assert not state.exists()
    assert f"demo state removed ({state})" in done.stdout


@pytest.mark.slow
def test_keep_keeps_the_temporary_state() -> None:
    done = _demo("--duration", "3", "--plain", "--keep")
    assert done.returncode == 0, done.stderr[-2000:]
    state = _state_dir(done.stdout)
    try:
        assert (state / "local.sqlite").is_file()
        assert f"demo state kept in {state}" in done.stdout
    finally:
        subprocess.run(["rm", "-rf", str(state)], check=True)


@pytest.mark.slow
def test_banner_stays_on_a_terminal_and_the_screen_fits(tmp_path: Path) -> None:
    lines = 40
    leader, follower = pty.openpty()
    env = {**os.environ, "LINES": str(lines), "COLUMNS": "150"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--duration", "5", "--state-dir",
                             str(tmp_path / "demo")], stdout=follower, stderr=follower, env=env)  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the demo exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=60) == 0
    screens = b"".join(chunks).decode().replace("\r\n", "\n").split(CLEAR)
    refreshed = [s for s in screens if "latest readings" in s]
    assert len(refreshed) >= 2
    last = refreshed[-1]
    assert last.startswith("gateway demo: ")  # the banner is on top of every refresh
    assert "metrics: http://127.0.0.1:" in last
    query_hint = f"{sys.executable} -m gateway query --state-dir {tmp_path / 'demo'} --latest"
    assert query_hint in last
    assert len(last.rstrip("\n").split("\n")) <= lines
