"""End to end through a real Mosquitto: simulated ChirpStack and TTS uplinks -> driver -> emit."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest
from lora_helpers import Harness, wait_for

from gateway.simulators.lorawan.ns import (
    CHIRPSTACK_APP,
    NetworkServerSim,
    Server,
    make_devices,
    rfc3339_ns,
    uplink_topic,
)
from gateway.simulators.lorawan.payloads import expected_values
from tests.servers import Mosquitto

DEVICE_PROFILES = {"dragino_lht65": "lorawan-dragino-lht65", "decentlab": "lorawan-decentlab-dl-sht35"}


def harness(mosquitto: Mosquitto, server: str, codec: str, n_devices: int, **extra: object) -> Harness:
    devices = make_devices(n_devices, codec)
    ids = [d.dev_eui if server == "chirpstack" else d.device_id for d in devices]
    entries = [{"id": i, "profile": DEVICE_PROFILES[codec]} for i in ids] if codec in DEVICE_PROFILES else []
    return Harness(
        server=server,
        host=mosquitto.host,
        port=mosquitto.port,
        client_id=f"t-{server}-{mosquitto.port}",
        devices=entries,
        default_codec=None if entries else codec,
        **extra,
    )


@pytest.mark.parametrize(("server", "codec"), [("chirpstack", "dragino_lht65"), ("ttn", "elsys")])
async def test_uplinks_with_duplicates_rejoins_and_garbage(mosquitto: Mosquitto, server: Server, codec: str) -> None:
    h = harness(mosquitto, server, codec, 3)
    await h.start()
    sim = NetworkServerSim(
        host=mosquitto.host,
        port=mosquitto.port,
        server=server,
        devices=make_devices(3, codec),
        rate=0,
        duplicate_every=4,
        malformed_every=5,
        rejoin_every=4,
    )
    stats = await sim.run(40)
    published = stats.uplinks + stats.duplicates + stats.malformed + stats.joins
    try:
        # Every published message processed and acknowledged: a duplicate let through would be in by now.
        await wait_for(lambda: h.driver.counters["acknowledged"] >= published, what="every message acknowledged")
    finally:
        await h.stop()

    assert stats.joins > 0 and stats.duplicates == 10 and stats.malformed == 8
    # every distinct uplink exactly once, with its own frame counter
    got = sorted((r.device, r.value, r.ts_ns) for r in h.of("frame_counter"))
    assert len(got) == len(set(got)) == stats.uplinks == 40
    name = {d.device_id: (d.dev_eui if server == "chirpstack" else d.device_id) for d in sim.devices}
    assert sorted(name[d] for d, _ in stats.sent) == sorted(d for d, _, _ in got)
    assert sorted((name[d], f) for d, f in stats.sent) == sorted((d, f) for d, f, _ in got)
    # decoded values: the n-th uplink of each device carries expected_values(n)
    temps = sorted(h.of("temperature"), key=lambda r: r.ts_ns)
    by_device: dict[str, list[float]] = {}
    for r in temps:
        by_device.setdefault(r.device, []).append(float(r.value))
    for values in by_device.values():
        assert values == pytest.approx([expected_values(n)["temperature"] for n in range(len(values))], abs=0.01)
    # faults counted, never crashing
    assert h.errors["duplicate"] == 10
    assert h.errors["malformed_json"] + h.errors["missing_field"] + h.errors["bad_base64"] == 8
    assert min(h.errors[k] for k in ("malformed_json", "missing_field", "bad_base64")) >= 2
    # radio metadata and timestamps from the uplink, best gateway
    rssi = h.of("rssi")
    assert {r.value for r in rssi} == {-87} and {r.unit for r in rssi} == {"dBm"}
    assert {r.tags["gateway_id"] for r in rssi} == ({"0016c001f153a14d"} if server == "chirpstack" else {"gtw-north"})
    assert {r.value for r in h.of("spreading_factor")} == {7}


async def test_timestamp_is_the_uplink_time_and_radio_as_tags(mosquitto: Mosquitto) -> None:
    h = harness(mosquitto, "chirpstack", "cayenne_lpp", 1, radio="tags")
    await h.start()
    dev = make_devices(1, "cayenne_lpp")[0]
    dev.f_cnt = 9
    when = 1_700_000_000_123_456_789
    sim = NetworkServerSim(host="", port=0, server="chirpstack", devices=[dev], clock=lambda: when)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for topic, body in sim.next_messages():
            await client.publish(topic, body, qos=1)
    try:
        await wait_for(lambda: len(h.readings) >= 3)
    finally:
        await h.stop()
    assert {r.ts_ns for r in h.readings} == {when}
    assert {r.quantity for r in h.readings} == {"temperature", "relative_humidity", "voltage"}  # no radio readings
    t = h.of("temperature")[0]
    assert t.tags["f_cnt"] == "9" and t.tags["rssi"] == "-87" and t.tags["sf"] == "7" and t.tags["channel"] == "1"
    assert t.tags["dev_eui"] == dev.dev_eui


async def test_server_decoded_object_and_status_battery(mosquitto: Mosquitto) -> None:
    dev = make_devices(1, "dragino_lht65")[0]
    h = Harness(
        server="chirpstack",
        host=mosquitto.host,
        port=mosquitto.port,
        use_server_decoded=True,
        radio="off",
        devices=[{"id": dev.dev_eui.upper(), "name": "park-lht65", "profile": "lorawan-dragino-lht65"}],
    )
    await h.start()
    sim = NetworkServerSim(host="", port=0, server="chirpstack", devices=[dev], clock=lambda: 1_700_000_000 * 10**9)
    (topic, body), *_ = sim.next_messages()
    doc = json.loads(body)
    doc["object"] = {"TempC_SHT": 21.5, "Hum_SHT": 55, "BatV": 3.1, "Ext_sensor": "No external sensor"}
    status = {
        "deduplicationId": "s1",
        "time": rfc3339_ns(1_700_000_100 * 10**9),
        "margin": 7,
        "batteryLevel": 88.5,
        "deviceInfo": {"devEui": dev.dev_eui, "applicationId": CHIRPSTACK_APP},
    }
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(topic, json.dumps(doc), qos=1)
        await client.publish(uplink_topic("chirpstack", CHIRPSTACK_APP, dev, "status"), json.dumps(status), qos=1)
    try:
        await wait_for(lambda: len(h.readings) >= 5)
    finally:
        await h.stop()
    got = {(r.device, r.quantity): r.value for r in h.readings}
    assert got == {
        ("park-lht65", "temperature"): 21.5,  # from the server's object, not the payload (15.0)
        ("park-lht65", "relative_humidity"): 55,
        ("park-lht65", "battery_voltage"): 3.1,
        ("park-lht65", "battery_level"): 88.5,
        ("park-lht65", "link_margin"): 7,
    }


async def test_unacknowledged_messages_come_back_after_a_crash(mosquitto: Mosquitto) -> None:
    """A message is acknowledged only after emit returns: if the gateway dies while
    committing, the broker redelivers to the same persistent session."""
    h1 = harness(mosquitto, "chirpstack", "cayenne_lpp", 2)
    committed = asyncio.Event()

    async def stuck_emit(readings: object) -> None:
        committed.set()
        await asyncio.Event().wait()  # the buffer never confirms: we "crash" before acking

    await h1.driver.start()
    task = asyncio.create_task(h1.driver.run(stuck_emit))
    await wait_for(lambda: h1.up_events[-1:] == [True])
    sim = NetworkServerSim(
        host=mosquitto.host, port=mosquitto.port, server="chirpstack", devices=make_devices(2, "cayenne_lpp"), rate=0
    )
    stats = await sim.run(6)
    await asyncio.wait_for(committed.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    h2 = harness(mosquitto, "chirpstack", "cayenne_lpp", 2)  # same client id, fresh process state
    await h2.start()
    try:
        # The acknowledgements go out after the commit.
        await wait_for(lambda: h2.driver.counters["acknowledged"] >= stats.uplinks, what="redelivered uplinks acked")
    finally:
        await h2.stop()
    assert len(h2.of("frame_counter")) == 6

    # h2 acknowledged them: nothing comes back. The broker sends a session's queued
    # messages before newer ones, so once a marker uplink published now has
    # arrived, anything redelivered would have arrived before it.
    h3 = harness(mosquitto, "chirpstack", "cayenne_lpp", 2)
    await h3.start()
    marker = sim.next_messages()
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for topic, body in marker:
                await client.publish(topic, body, qos=1)
        await wait_for(lambda: len(h3.of("frame_counter")) >= 1, what="the marker uplink")
    finally:
        await h3.stop()
    assert [r.value for r in h3.of("frame_counter")] == [json.loads(marker[0][1])["fCnt"]]
    assert h3.driver.counters["messages"] == 1


@pytest.mark.slow
async def test_broker_restart_is_logged_once_and_recovers(mosquitto: Mosquitto) -> None:
    h = harness(mosquitto, "ttn", "cayenne_lpp", 1)
    await h.start()
    mosquitto.stop()
    await wait_for(lambda: h.up_events[-1:] == [False], what="down")
    await asyncio.sleep(1.5)  # several reconnect attempts while the broker is away
    mosquitto.start()
    await wait_for(lambda: h.up_events[-1:] == [True], timeout=40, what="reconnect")
    sim = NetworkServerSim(
        host=mosquitto.host, port=mosquitto.port, server="ttn", devices=make_devices(1, "cayenne_lpp"), rate=0
    )
    await sim.run(3)
    try:
        await wait_for(lambda: len(h.of("frame_counter")) >= 3)
    finally:
        await h.stop()
    assert h.up_events.count(False) == 1 and h.errors["connection"] >= 2
