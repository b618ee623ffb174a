"""Bad input at the command line: one line, the next step, the documented exit code, never a traceback.

Issue 8 item 10 and issue 9 item 6 (relative paths resolve against the config file's folder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.buffer_sqlite import DurableBuffer
from gateway.sinks.local import LocalStore
from tests.test_cli import gateway

SIM = '[[sources]]\ndriver = "simulated"\nname = "s"\ndevices = [{ name = "w", kind = "weather" }]\n'
INFLUX = '[[sinks]]\ntype = "influxdb"\nurl = "https://influx.example:8086"\norg = "o"\nbucket = "b"\n'


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


def test_a_config_that_is_not_utf8_exits_2_in_check_and_run(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_bytes(b'[gateway]\nsite = "caf\xe9"\n')
    for command in ("check", "run"):
        result = gateway(command, "-c", str(cfg), timeout=30)
        assert result.returncode == 2, result.stderr
        _no_traceback(result.stderr)
        assert f"{cfg}: line 2: not UTF-8 text" in result.stderr


def test_a_missing_token_file_is_a_warning_in_check_and_exit_2_in_run(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nname = "gw"\nstate_dir = "st"\n' + SIM + INFLUX + 'token_file = "influx-token"\n')
    check = gateway("check", "-c", str(cfg))
    assert check.returncode == 0, check.stderr
    missing = f"sinks[0].token_file: {tmp_path / 'credentials' / 'influx-token'} does not exist"
    assert f"{cfg}: {missing.replace(': ', ': warning: ', 1)}" in check.stderr
    run = gateway("run", "-c", str(cfg), timeout=30)
    assert run.returncode == 2
    _no_traceback(run.stderr)
    assert f"{cfg}: {missing}" in run.stderr and "did not start" in run.stderr
    # once the file is there, check is quiet about it
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "influx-token").write_text("t\n")
    assert "token_file" not in gateway("check", "-c", str(cfg)).stderr


def test_check_warns_about_metrics_on_every_interface(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nstate_dir = "st"\n[metrics]\nlisten = "0.0.0.0:9108"\n' + SIM)
    result = gateway("check", "-c", str(cfg))
    assert result.returncode == 0
    assert f"{cfg}: metrics.listen: warning: '0.0.0.0:9108' serves the metrics to the network" in result.stderr


def test_run_refuses_a_buffer_path_on_a_text_file_and_an_impossible_state_dir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database\n")
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateway]\nstate_dir = "notes.txt/state"\n[buffer]\npath = "notes.txt"\n' + SIM)
    result = gateway("run", "-c", str(cfg), timeout=30)
    assert result.returncode == 2
    _no_traceback(result.stderr)
    lines = result.stderr.splitlines()
    assert (
        f"{cfg}: gateway.state_dir: cannot create {tmp_path / 'notes.txt' / 'state'}: Not a directory; " in (lines[0])
    )
    assert lines[1] == (
        f"{cfg}: buffer.path: {tmp_path / 'notes.txt'} is not an SQLite database (another file is in the way); "
        "point buffer.path at a new file name"
    )


def test_query_with_a_bad_since_is_a_usage_error(tmp_path: Path) -> None:
    result = gateway("query", "--state-dir", str(tmp_path), "--since", "5 parsecs")
    assert result.returncode == 2
    _no_traceback(result.stderr)
    assert "argument --since: not a duration; write a number with a unit ms, s, m, h or d" in result.stderr
    assert "(got '5 parsecs')" in result.stderr


def test_buffer_stats_on_a_text_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "buffer.sqlite").write_text("hello\n")
    result = gateway("buffer", "stats", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    _no_traceback(result.stderr)
    assert f"cannot read the buffer {tmp_path / 'buffer.sqlite'}" in result.stderr


def test_data_commands_find_a_relative_state_dir_from_any_directory(tmp_path: Path) -> None:
    site = tmp_path / "site"
    state = site / "state"
    state.mkdir(parents=True)
    cfg = site / "gw.toml"
    cfg.write_text('[gateway]\nsite = "s"\nname = "g"\nstate_dir = "state"\n' + SIM)
    status = {"gateway": "g", "site": "s", "version": "0", "updated_ns": time.time_ns() + 60 * 10**9,
              "sources": {}, "sinks": {}}  # fmt: skip
    (state / "status.json").write_text(json.dumps(status))
    LocalStore(state / "local.sqlite").close()
    DurableBuffer(state / "buffer.sqlite").close()

    st = gateway("status", "-c", str(cfg), "--json", cwd=Path("/"))
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["gateway"] == "g"
    q = gateway("query", "-c", str(cfg), "--latest", cwd=Path("/"))
    assert q.returncode == 0, q.stderr
    b = gateway("buffer", "stats", "-c", str(cfg), cwd=Path("/"))
    assert b.returncode == 0, b.stderr
    assert f"buffer {state / 'buffer.sqlite'}" in b.stdout
