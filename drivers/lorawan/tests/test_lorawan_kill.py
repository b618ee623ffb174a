"""kill -9 of the whole gateway during a burst of uplinks loses none.

The daemon runs as a subprocess (``python -m gateway run -c FILE``) with the
lorawan source on the Mosquitto fixture and the local sink. It is killed with
SIGKILL while a burst is being published; the rest of the burst is published
while it is dead; after a restart, the local store must hold every uplink
exactly once. This works because messages are acknowledged only after their
readings are committed, the session is persistent (QoS 1, clean_session off,
stable client id), and replays of committed uplinks carry the same timestamps
(the uplink's own time), so the store keeps one row per uplink.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
from gateway.simulators.lorawan.ns import NetworkServerSim, make_devices

from gateway.sinks.local import LocalStore
from tests.servers import Mosquitto

BURST = 400


def write_config(tmp_path: Path, mosquitto: Mosquitto) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"""
[gateway]
site = "s"
name = "g"
state_dir = "{tmp_path / "state"}"

[metrics]
enabled = false

[[sources]]
driver = "lorawan"
name = "lns"
server = "chirpstack"
host = "{mosquitto.host}"
port = {mosquitto.port}
client_id = "kill-test-gateway"
default_codec = "cayenne_lpp"
radio = "readings"

[[sinks]]
type = "local"
""")
    return cfg


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cfg.parent,
        )


def stored_uplinks(state: Path) -> list[tuple[str, float]]:
    path = state / "local.sqlite"
    if not path.exists():
        return []
    store = LocalStore(path, readonly=True)
    try:
        return [
            (p.reading.device, float(p.reading.value)) for p in store.query(quantity="frame_counter", limit=100_000)
        ]
    except Exception:  # the daemon may not have created the table yet
        return []
    finally:
        store.close()


async def wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_kill_9_during_a_burst_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = write_config(tmp_path, mosquitto)
    state, log = tmp_path / "state", tmp_path / "daemon.log"
    daemon = start_daemon(cfg, log)
    sim = NetworkServerSim(
        host=mosquitto.host, port=mosquitto.port, server="chirpstack", devices=make_devices(4, "cayenne_lpp"), rate=0
    )
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            # Warm-up: the first uplink is repeated (same message, deduplicated) until it is stored,
            # which proves the daemon is up and its persistent session exists.
            warm_up = sim.next_messages()
            deadline = time.monotonic() + 30
            while not stored_uplinks(state):
                assert daemon.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "daemon did not store the warm-up uplink:\n" + log.read_text()
                for topic, body in warm_up:
                    await client.publish(topic, body, qos=1)
                await asyncio.sleep(0.3)

            for n in range(BURST):
                for topic, body in sim.next_messages():
                    await client.publish(topic, body, qos=1)
                if n == BURST // 3:
                    await asyncio.sleep(0.15)  # let it be busy committing and acknowledging
                    os.kill(daemon.pid, signal.SIGKILL)
                    daemon.wait()
        killed_with = len(set(stored_uplinks(state)))

        daemon = start_daemon(cfg, log)
        expected = {(d.dev_eui, float(f)) for d in sim.devices for dd, f in sim.stats.sent if dd == d.device_id}
        await wait_until(lambda: set(stored_uplinks(state)) >= expected, 60, "every uplink to be stored")
        await asyncio.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()

    got = stored_uplinks(state)
    assert len(expected) == BURST + 1
    assert 0 < killed_with < BURST + 1, "the kill must land in the middle of the burst"
    assert set(got) == expected
    assert len(got) == len(set(got))  # once each
