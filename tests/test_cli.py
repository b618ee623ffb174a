"""The gateway command as a technician uses it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import build_parser


def gateway(*args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)  # fmt: skip


def test_check_accepts_a_valid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nsite = "s"\nstate_dir = "st"\n[[sources]]\ndriver = "simulated"\nname = "x"\n'
                   'devices = [{ name = "d" }]\n')  # fmt: skip
    result = gateway("check", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "1 simulated" in result.stdout


def test_check_exits_2_with_file_and_key_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[sources]]\ndriver = "simulated"\nname = "x"\ninterval = "soon"\n'
                   'devices = [{ name = "d", kind = "lava" }]\n')  # fmt: skip
    result = gateway("check", "-c", str(cfg))
    assert result.returncode == 2
    assert f"{cfg}: sources[0].interval:" in result.stderr
    assert f"{cfg}: sources[0].devices[0].kind:" in result.stderr
    assert "2 problem(s)" in result.stderr


def test_run_refuses_an_invalid_config_with_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[buffer]\nmax_bytes = "huge"\n')
    result = gateway("run", "-c", str(cfg), timeout=30)
    assert result.returncode == 2
    assert "buffer.max_bytes" in result.stderr and "gateway check" in result.stderr


def test_every_command_help_shows_an_example() -> None:
    parser = build_parser()
    seen = 0
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():  # type: ignore[attr-defined]
                    text = sub.format_help()
                    assert "example" in text and "gateway" in text.split("example", 1)[1], f"{name} --help"
                    seen += 1
                    stack.append(sub)
    assert seen >= 10


def test_version_lists_plugins() -> None:
    result = gateway("version")
    assert result.returncode == 0
    assert "simulated" in result.stdout and "local" in result.stdout


@pytest.mark.slow
def test_demo_runs_and_shows_live_readings(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = gateway("demo", "--duration", "8", "--plain", "--state-dir", str(state), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "latest readings" in result.stdout
    assert "park-weather" in result.stdout and "temperature" in result.stdout
    assert "status page: http://127.0.0.1:" in result.stdout  # the banner points the technician at the page
    # The data stays queryable afterwards.
    q = gateway("query", "--state-dir", str(state), "--latest", "--format", "json")
    assert q.returncode == 0, q.stderr
    rows = [json.loads(line) for line in q.stdout.splitlines()]
    assert {"temperature", "pm2_5"} <= {r["quantity"] for r in rows}
    stats = gateway("buffer", "stats", "--state-dir", str(state), "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["readings"] == 0  # all delivered at a clean stop


@pytest.mark.slow
def test_the_readme_demo_script_passes_its_arguments_to_gateway_demo(tmp_path: Path) -> None:
    # ./scripts/demo sets up .venv (a no-op when scripts/test already did) then runs `gateway demo "$@"`.
    root = Path(__file__).resolve().parent.parent
    state = tmp_path / "demo"
    command = [str(root / "scripts" / "demo"), "--duration", "4", "--plain", "--state-dir", str(state)]
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "latest readings" in result.stdout
    assert (state / "local.sqlite").exists()


def test_status_text_shows_clock_sources_and_sinks() -> None:
    import io

    from gateway.cli_data import print_status

    status = {
        "gateway": "gw-1", "site": "market", "version": "0.1.0", "clock_synchronized": False,
        "buffer": {"readings": 12, "bytes": 480, "oldest_ts_ns": None, "dropped_oldest_total": 0,
                   "dropped_newest_total": 0, "sinks": {"influx": {"pending": 12}}},
        "sources": {"air": {"driver": "serial", "state": "running", "readings": 600, "restarts": 0, "error": None,
                            "devices_down": [], "aggregates": 20, "open_windows": 2}},
        "sinks": {"influx": {"type": "influxdb", "state": "failing", "sent": 0, "dead_lettered": 0,
                             "error": "cannot reach http://influx:8086"}},
    }  # fmt: skip
    out = io.StringIO()
    print_status(status, age_s=1.0, out=out)
    text = out.getvalue()
    assert "gw-1 (site market, version 0.1.0): running" in text
    assert "clock: NOT SYNCHRONISED" in text
    assert "20 aggregates sent, 2 windows open" in text
    assert "cannot reach http://influx:8086" in text
    stale = io.StringIO()
    print_status({**status, "clock_synchronized": True}, age_s=120.0, out=stale)
    assert "NOT RUNNING" in stale.getvalue() and "clock" not in stale.getvalue()


def test_status_text_shows_a_stall_an_unknown_clock_and_dispatcher_restarts() -> None:
    import io

    from gateway.cli_data import print_status

    status = {
        "gateway": "gw-1", "site": "market", "version": "0.1.0", "clock_synchronized": "unknown",
        "stalled": "the dispatcher of sink influx has failed for 130 s (BufferFullError: disk full)",
        "buffer": None, "sources": {},
        "sinks": {"influx": {"type": "influxdb", "state": "failing", "sent": 13, "dead_lettered": 0, "restarts": 4,
                             "error": "BufferFullError: disk full"}},
    }  # fmt: skip
    out = io.StringIO()
    print_status(status, age_s=1.0, out=out)
    text = out.getvalue()
    assert "STALLED: the dispatcher of sink influx has failed for 130 s" in text
    assert "clock: synchronisation unknown" in text
    assert "dispatcher restarted 4x; BufferFullError: disk full" in text


def test_core_commands_start_without_importing_plugin_command_lines(tmp_path: Path) -> None:
    # Building every plugin's command line (the simulators, pymodbus' server side) cost `gateway run`
    # 0.5 s of its startup; a core command builds only its own.
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nsite = "s"\nstate_dir = "st"\n[[sources]]\ndriver = "simulated"\nname = "x"\n'
                   'devices = [{ name = "d" }]\n')  # fmt: skip
    probe = (
        "import sys\nfrom gateway.cli import main\n"
        f"code = main(['check', '-c', {str(cfg)!r}])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('gateway.simulators')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 []"
    assert "modbus" in gateway("sim", "--help").stdout  # plugin commands are still there
