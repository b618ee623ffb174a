"""Many gateway processes on one machine: configs, start, stop, status. Shared by the fleet test and bench_fleet."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def gateway_config(
    folder: Path,
    name: str,
    *,
    vm_url: str,
    mqtt_port: int,
    site: str = "city",
    interval: str = "1s",
    keepalive: int = 5,
    status_interval: str = "5s",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "gw.toml"
    cfg.write_text(
        f'[gateway]\nsite = "{site}"\nname = "{name}"\nstate_dir = "{folder / "state"}"\n'
        '[buffer]\nflush_interval = "100ms"\nsync = "normal"\n[metrics]\nenabled = false\n'
        f'[fleet]\nhost = "127.0.0.1"\nport = {mqtt_port}\nkeepalive = {keepalive}\n'
        f'status_interval = "{status_interval}"\nhealth_interval = "{status_interval}"\n'
        f'[[sources]]\ndriver = "simulated"\nname = "street"\ninterval = "{interval}"\n'
        'devices = [{ name = "counter", kind = "sequence" }, { name = "weather", kind = "weather" }]\n'
        f'[[sinks]]\ntype = "influxdb"\nurl = "{vm_url}"\norg = "city"\nbucket = "b"\n'
    )
    return cfg


def start(cfg: Path) -> subprocess.Popen[bytes]:
    with (cfg.parent / "daemon.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(cfg)], stderr=log)


def status(cfg: Path) -> dict[str, Any]:
    try:
        return json.loads((cfg.parent / "state" / "status.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def log_text(cfg: Path) -> str:
    return (cfg.parent / "daemon.log").read_text(errors="replace")


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def publishing(cfg: Path) -> bool:
    """Started, connected to the broker, and delivering to its sink."""
    s = status(cfg)
    sink = (s.get("sinks") or {}).get("influxdb") or {}
    return bool((s.get("fleet") or {}).get("connected")) and sink.get("sent", 0) > 0


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
