"""Fleet: identity, the retained status on MQTT, health readings, duplicate names, poll phase, `gateway fleet`."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway import scheduling
from gateway.cli_data import print_status
from gateway.config import load_config
from gateway.daemon import Daemon
from gateway.fleet import cli as fleet_cli
from gateway.fleet.identity import IDENTITY_FILE, load_identity, stored_identity
from gateway.metrics import Metrics
from gateway.sinks.local import LocalStore
from gateway.sinks.mqtt import MQTTSink, MQTTSinkConfig
from tests.servers import Mosquitto


def gw_config(path: Path, state: Path, *, name: str | None = "gw-1", fleet: str = "", extra: str = "") -> Path:
    name_line = f'name = "{name}"\n' if name is not None else ""
    path.write_text(
        f'[gateway]\nsite = "city"\n{name_line}state_dir = "{state}"\n{extra}'
        '[buffer]\nflush_interval = "50ms"\nsync = "normal"\n'
        "[metrics]\nenabled = false\n"
        f"{fleet}"
        '[[sources]]\ndriver = "simulated"\nname = "street"\ninterval = "100ms"\n'
        'devices = [{ name = "weather-1", kind = "weather" }]\n'
        '[[sinks]]\ntype = "local"\n'
    )
    return path


def fleet_section(port: int, **more: str) -> str:
    lines = ['host = "127.0.0.1"', f"port = {port}", 'status_interval = "2s"', 'health_interval = "1s"']
    lines += [f"{k} = {v}" for k, v in more.items()]
    return "[fleet]\n" + "\n".join(lines) + "\n"


async def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


class StatusWatch:
    """Every status message seen on the fleet topics, by topic, in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe("gateway-fleet/v1/#", qos=1)
            self.subscribed.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.seen.setdefault(str(message.topic), []).append(json.loads(message.payload))

    async def __aenter__(self) -> StatusWatch:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def last(self, topic: str) -> dict[str, Any] | None:
        return self.seen.get(topic, [None])[-1]


# --- identity -------------------------------------------------------------------------------------------


def test_identity_is_kept_across_restarts_and_renewed_on_a_cloned_image(tmp_path: Path) -> None:
    first = load_identity(tmp_path, current_machine_id="machine-a")
    again = load_identity(tmp_path, current_machine_id="machine-a")
    assert again == first and len(first.id) == 32
    cloned = load_identity(tmp_path, current_machine_id="machine-b")  # the state dir copied to another box
    assert cloned.id != first.id and cloned.renewed_from == first.id
    assert stored_identity(tmp_path) == cloned  # kept: the next start on this box keeps the new one
    assert load_identity(tmp_path, current_machine_id="machine-b") == cloned


def test_an_unreadable_identity_file_gives_a_new_identity_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text("{not json")
    ident = load_identity(tmp_path, current_machine_id="m")
    assert stored_identity(tmp_path) == ident


def test_the_mqtt_sink_client_id_carries_the_identity_so_clones_do_not_take_over_each_other(tmp_path: Path) -> None:
    ident = load_identity(tmp_path, current_machine_id="m")
    cfg = MQTTSinkConfig(host="127.0.0.1")
    sink = MQTTSink(cfg, site="city", gateway="gw-1", state_dir=tmp_path)
    assert sink.client_id == f"gateway-gw-1-mqtt-{ident.short}"


# --- config ---------------------------------------------------------------------------------------------


def test_check_warns_when_the_name_is_left_to_the_host_name(tmp_path: Path) -> None:
    unnamed = gw_config(tmp_path / "a.toml", tmp_path / "s", name=None)
    named = gw_config(tmp_path / "b.toml", tmp_path / "s")
    run = [sys.executable, "-m", "gateway", "check", "-c"]
    result = subprocess.run([*run, str(unnamed)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert f"{unnamed}: gateway.name: warning: not set, so the host name" in result.stderr
    result = subprocess.run([*run, str(named)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "gateway.name" not in result.stderr


def test_a_poll_phase_outside_the_interval_is_a_config_error(tmp_path: Path) -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"gateway\.poll_phase"):
        load_config(gw_config(tmp_path / "gw.toml", tmp_path / "s", extra="poll_phase = 1.5\n"))


# --- poll phase -----------------------------------------------------------------------------------------


def test_the_phase_moves_every_tick_by_the_same_fraction_of_its_interval() -> None:
    before = scheduling.set_phase(0.25)
    try:
        assert scheduling.next_aligned_tick(100.0, 10.0) == 102.5
        assert scheduling.next_aligned_tick(103.0, 10.0) == 112.5
        assert scheduling.next_aligned_tick(100.0, 10.0, offset_s=0.0) == 100.0  # an explicit offset wins
    finally:
        scheduling.set_phase(before)


async def test_the_daemon_polls_at_its_identity_phase_and_readings_carry_the_tick_time(tmp_path: Path) -> None:
    path = gw_config(tmp_path / "gw.toml", tmp_path / "state")
    path.write_text(path.read_text().replace('interval = "100ms"', 'interval = "200ms"'))
    daemon = Daemon(load_config(path), metrics=Metrics(), serve_metrics=False)
    task = asyncio.create_task(daemon.run())
    await wait_for(lambda: daemon.supervisors and daemon.supervisors["street"].readings_total >= 30)
    assert daemon.identity is not None
    phase = daemon.identity.phase()
    assert scheduling.phase() == phase and daemon.status()["poll_phase"] == round(phase, 4)
    daemon.request_stop()
    await task
    assert scheduling.phase() == 0.0  # restored for whatever runs next in this process
    store = LocalStore(tmp_path / "state" / "local.sqlite", readonly=True)
    try:
        stamps = sorted({p.reading.ts_ns for p in store.iter_all() if p.reading.device == "weather-1"})
    finally:
        store.close()
    # Each poll is read at phase x 200 ms past a multiple of 200 ms, plus how late the loop woke up
    # (on a loaded machine a poll can be late; the typical one is not).
    lateness = sorted(((ts / 1e6) - phase * 200) % 200 for ts in stamps)
    assert len(lateness) >= 5 and lateness[len(lateness) // 2] < 50, lateness


# --- status on MQTT -------------------------------------------------------------------------------------


async def test_status_is_published_retained_with_health_and_says_stopped_on_a_clean_stop(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    path = gw_config(tmp_path / "gw.toml", tmp_path / "state", fleet=fleet_section(mosquitto.port))
    metrics = Metrics()
    daemon = Daemon(load_config(path), metrics=metrics, serve_metrics=False)
    daemon.clock_check = lambda: True  # this test machine may have no NTP
    async with StatusWatch(mosquitto.port) as watch:
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.identity is not None)
        assert daemon.identity is not None
        topic = f"gateway-fleet/v1/city/gw-1/{daemon.identity.id}"
        await wait_for(lambda: (watch.last(topic) or {}).get("last_reading_ns") is not None)
        doc = watch.last(topic)
        assert doc is not None
        assert doc["schema"] == "gateway-status/1" and doc["state"] == "online"
        assert doc["id"] == daemon.identity.id and doc["name"] == "gw-1" and doc["site"] == "city"
        assert doc["version"] and doc["config_digest"] and doc["started_ns"] == daemon.started_ns
        assert doc["sinks"]["local"]["state"] == "ok" and doc["sources"]["street"]["state"] == "running"
        assert doc["sources"]["street"]["since_ns"] <= doc["updated_ns"]
        assert set(doc["buffer"]) >= {"readings", "oldest_age_s"} and doc["problems"] == []
        assert daemon.status()["fleet"]["connected"] is True
        await wait_for(lambda: len(watch.seen[topic]) >= 2)  # the steady interval republishes
        daemon.request_stop()
        await task
        await wait_for(lambda: (watch.last(topic) or {}).get("state") == "stopped")
    assert metrics.registry.get_sample_value("gateway_fleet_status_published_total", {}) >= 2  # type: ignore[operator]
    # retained: a control post that looks later still sees it
    docs = await fleet_cli.collect("127.0.0.1", mosquitto.port, "gateway-fleet/v1", wait_s=5)
    assert docs[topic]["state"] == "stopped"
    # and the health went to the sinks as readings of device _gateway
    store = LocalStore(tmp_path / "state" / "local.sqlite", readonly=True)
    try:
        health = {p.reading.quantity for p in store.iter_all() if p.reading.device == "_gateway"}
    finally:
        store.close()
    assert {"uptime", "buffer_readings", "sinks_failing", "devices_down", "duplicate_name"} <= health


async def test_two_gateways_under_one_name_both_say_so_and_do_not_flap(tmp_path: Path, mosquitto: Mosquitto) -> None:
    fleet = fleet_section(mosquitto.port)
    daemons = [
        Daemon(load_config(gw_config(tmp_path / f"{n}.toml", tmp_path / n, fleet=fleet)), serve_metrics=False)
        for n in ("a", "b")
    ]
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        await wait_for(lambda: all((d.status()["fleet"] or {}).get("duplicate") for d in daemons))
        a, b = daemons
        assert a.identity is not None and b.identity is not None
        assert a.status()["fleet"]["duplicate"]["ids"] == [b.identity.short]
        assert a.metrics.registry.get_sample_value("gateway_duplicate_name", {}) == 1
        since = a.status()["fleet"]["duplicate"]["since_ns"]
        docs = await fleet_cli.collect("127.0.0.1", mosquitto.port, "gateway-fleet/v1", wait_s=5)
        table = fleet_cli.rows(docs.values())
        assert len(table) == 2 and all("another gateway uses this name" in r["problems"][0] for r in table)
        await asyncio.sleep(3)  # over a status interval: the alarm holds, same since
        assert a.status()["fleet"]["duplicate"]["since_ns"] == since
        out = io.StringIO()
        print_status(a.status(), 0.0, out)  # what `gateway status` prints
        assert f"DUPLICATE NAME: another running gateway publishes under this name (identity {b.identity.short})" in (
            out.getvalue()
        )
    finally:
        for d in daemons:
            d.request_stop()
        await asyncio.gather(*tasks)


# --- gateway fleet --------------------------------------------------------------------------------------


def status_doc(i: int, **changes: Any) -> dict[str, Any]:
    import time

    now = time.time_ns()
    doc = {
        "schema": "gateway-status/1", "state": "online", "id": f"{i:032x}", "site": "city", "name": f"gw-{i:03d}",
        "version": "1.0", "started_ns": now - 10**12, "updated_ns": now, "status_interval_s": 30,
        "buffer": {"readings": 0, "oldest_age_s": 0.0}, "sinks": {"influx": {"state": "ok"}},
        "sources": {}, "devices_down": 0, "clock_synchronized": True, "duplicate": None, "problems": [],
    }  # fmt: skip
    doc.update(changes)
    return doc


async def test_the_fleet_command_shows_200_gateways_problems_first(tmp_path: Path, mosquitto: Mosquitto) -> None:
    docs = [status_doc(i) for i in range(200)]
    docs[57] = status_doc(57, state="offline")
    docs[120] = status_doc(120, sinks={"influx": {"state": "failing"}})
    docs[130] = status_doc(130, state="stopped")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        for d in docs:
            await client.publish(f"gateway-fleet/v1/city/{d['name']}/{d['id']}", json.dumps(d), qos=1, retain=True)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "fleet", "--broker", "127.0.0.1", "--port", str(mosquitto.port), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # some have problems
    table = json.loads(result.stdout)
    assert len(table) == 200
    assert [r["name"] for r in table[:3]] == ["gw-057", "gw-120", "gw-130"]
    assert table[1]["problems"] == ["sink influx failing"] and table[2]["problems"] == ["gateway stopped"]
    assert all(r["problems"] == [] for r in table[3:])
    cfg = gw_config(tmp_path / "gw.toml", tmp_path / "s", fleet=fleet_section(mosquitto.port))  # broker from [fleet]
    text = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", "fleet", "-c", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = text.stdout.splitlines()
    assert lines[0].split()[:4] == ["SITE", "NAME", "ID", "STATE"] and "gw-057" in lines[1]
    assert lines[-1] == "200 gateway(s), 3 with problems"


# --- freeze and resume ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_freeze_and_resume_reconnects_without_a_traceback(tmp_path: Path, mosquitto: Mosquitto) -> None:
    import signal
    import time

    state = tmp_path / "state"
    path = gw_config(tmp_path / "gw.toml", state, fleet=fleet_section(mosquitto.port, keepalive="5"))
    path.write_text(
        path.read_text()
        + f'[[sinks]]\ntype = "mqtt"\nhost = "127.0.0.1"\nport = {mosquitto.port}\nkeepalive = 5\nqos = 1\n'
    )
    log = tmp_path / "gateway.log"

    def status() -> dict[str, Any]:
        try:
            return json.loads((state / "status.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def wait(predicate: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; log:\n{log.read_text()}"
            time.sleep(0.1)

    def connected_since() -> tuple[bool, int]:
        s = status()
        return bool((s.get("fleet") or {}).get("connected")), int(s.get("sinks", {}).get("mqtt", {}).get("sent", 0))

    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(path)], stderr=err)
    try:
        wait(lambda: connected_since()[0] and connected_since()[1] > 0)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(12)  # > 1.5 x keepalive: the broker drops both connections and publishes the Will
        proc.send_signal(signal.SIGCONT)
        sent_before = connected_since()[1]
        # reconnected: both connections were dropped by the broker and are up again, and data flows again
        wait(lambda: log.read_text().count("sink mqtt: connected to") >= 2)
        wait(lambda: "fleet status: publishing to 127.0.0.1 again" in log.read_text())
        wait(lambda: connected_since()[0] and connected_since()[1] > sent_before + 20)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text and "Exception in callback" not in text, text


@pytest.mark.parametrize("handler_installed", [True, False])
async def test_a_socket_registered_after_it_closed_is_a_debug_line_not_a_traceback(
    handler_installed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """What aiomqtt does after a freeze: ``call_soon_threadsafe(loop.add_writer, fd)`` for a socket closed since."""
    import socket

    from gateway import loop_errors

    loop = asyncio.get_running_loop()
    if handler_installed:
        loop_errors.install(loop)
    try:
        sock = socket.socket()
        fd = sock.fileno()
        sock.close()
        with caplog.at_level("DEBUG"):
            loop.call_soon_threadsafe(loop.add_writer, fd, lambda: None)
            await asyncio.sleep(0.05)
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        if handler_installed:
            assert not errors
            assert any("closed MQTT socket" in r.getMessage() for r in caplog.records)
        else:  # the default handler: the traceback the issue saw
            assert errors and "Exception in callback" in errors[0].getMessage()
    finally:
        loop.set_exception_handler(None)


async def test_a_box_with_this_identity_is_seen_and_counted_as_a_takeover(tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = gw_config(tmp_path / "gw.toml", tmp_path / "state", fleet=fleet_section(mosquitto.port))
    metrics = Metrics()
    daemon = Daemon(load_config(path), metrics=metrics, serve_metrics=False)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: daemon.fleet is not None and daemon.fleet.connected)
        assert daemon.identity is not None and daemon.fleet is not None
        ident, topic = daemon.identity, daemon.fleet.topic
        # A box cloned with its state dir and machine-id: same identity, so same client id. It takes the
        # connection over and publishes its status on the same topic, as the agent does.
        clone_doc = {"schema": "gateway-status/1", "state": "online", "id": ident.id, "instance": "c10e"}
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"gateway-fleet-{ident.id}") as clone:
            await clone.publish(topic, json.dumps(clone_doc), qos=1, retain=True)
        await wait_for(lambda: (daemon.status()["fleet"] or {}).get("duplicate") is not None)
        assert daemon.status()["fleet"]["duplicate"]["ids"] == [ident.short]
        assert metrics.registry.get_sample_value("gateway_fleet_takeovers_total", {}) == 1
        assert metrics.registry.get_sample_value("gateway_duplicate_name", {}) == 1
    finally:
        daemon.request_stop()
        await task


def test_a_missing_fleet_password_file_is_named_by_check(tmp_path: Path) -> None:
    path = gw_config(tmp_path / "gw.toml", tmp_path / "s", fleet=fleet_section(1883, password_file='"fleet-pw"'))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert f"{path}: fleet.password_file: warning: {tmp_path / 'credentials' / 'fleet-pw'} does not exist" in (
        result.stderr
    ), result.stderr


def test_the_duplicate_alarm_believes_live_statuses_doubts_old_retained_ones_and_holds() -> None:
    from gateway.fleet.duplicates import DuplicateWatch

    watch = DuplicateWatch(own_id="a" * 32, name="gw-1", site="city", hold_s=90)
    stale = {"id": "b" * 32, "state": "online", "updated_ns": 1}  # a rival whose clock is far off, or an old status
    watch.observe(stale, retained=True, now=0.0)
    assert watch.active(now=1.0) is None  # a retained status that old may be a box gone without a Will
    watch.observe(stale, retained=False, now=1.0)  # live: it is running now, whatever its clock says
    alarm = watch.active(now=2.0)
    assert alarm is not None and alarm["ids"] == ["b" * 8]
    assert watch.active(now=80.0) == alarm  # held between its statuses: no flapping
    watch.observe({"id": "b" * 32, "state": "stopped"}, now=85.0)
    assert watch.active(now=86.0) is None  # it stopped cleanly: over at once
