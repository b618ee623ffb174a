"""A network-server stand-in: publishes ChirpStack v4 / The Things Stack v3 uplinks to MQTT.

Message shapes follow docs/protocols.md#1a-chirpstack-v4 (the v4 "full" fixture) and
docs/protocols.md#1b-the-things-stack-v3 (the
TTS data-format example), including the TTS habit of omitting zero fields.
Faults on demand: every n-th uplink published twice (same deduplication id /
same frame counter), every n-th message malformed (garbage JSON, a missing
device id, bad base64, in turn), and a rejoin that resets frame counters.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt

from gateway.simulators.lorawan.payloads import ENCODERS

Server = Literal["chirpstack", "ttn"]
CHIRPSTACK_APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
TTN_APP = "city-sensors@ttn"


def rfc3339_ns(ts_ns: int) -> str:
    """``2025-01-27T09:27:50.123456789+00:00``: nine digits, as the servers send."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}+00:00"


@dataclass(slots=True)
class SimDevice:
    dev_eui: str
    device_id: str
    codec: str
    f_cnt: int = 0
    seq: int = 0  # uplinks sent, drives the payload values

    @property
    def f_port(self) -> int:
        return ENCODERS[self.codec][1]

    def payload(self) -> bytes:
        return ENCODERS[self.codec][0](self.seq)


def make_devices(count: int, codec: str, *, first: int = 1) -> list[SimDevice]:
    return [
        SimDevice(f"70b3d57ed00{n:05x}", f"sim-{codec.replace('_', '-')}-{n}", codec)
        for n in range(first, first + count)
    ]


def chirpstack_uplink(
    dev: SimDevice, *, ts_ns: int, application_id: str = CHIRPSTACK_APP, rssi: int = -87, snr: float = 7.5, sf: int = 7
) -> dict[str, Any]:
    iso = rfc3339_ns(ts_ns)
    return {
        "deduplicationId": str(uuid.uuid4()),
        "time": iso,
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "ChirpStack",
            "applicationId": application_id,
            "applicationName": "city-sensors",
            "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
            "deviceProfileName": dev.codec,
            "deviceName": dev.device_id,
            "devEui": dev.dev_eui,
            "deviceClassEnabled": "CLASS_A",
            "tags": {},
        },
        "devAddr": "260b1234",
        "adr": True,
        "dr": 5,
        "fCnt": dev.f_cnt,
        "fPort": dev.f_port,
        "confirmed": False,
        "data": base64.b64encode(dev.payload()).decode(),
        "rxInfo": [
            {
                "gatewayId": "0016c001f153a14c",
                "uplinkId": 4217106255,
                "nsTime": iso,
                "rssi": rssi - 12,
                "snr": snr - 6,
                "channel": 2,
                "crcStatus": "CRC_OK",
                "context": "E3OWOQ==",
            },
            {
                "gatewayId": "0016c001f153a14d",
                "uplinkId": 1217106255,
                "nsTime": iso,
                "rssi": rssi,
                "snr": snr,
                "channel": 2,
                "crcStatus": "CRC_OK",
                "metadata": {"region_config_id": "eu868"},
            },
        ],
        "txInfo": {
            "frequency": 868300000,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": sf, "codeRate": "CR_4_5"}},
        },
    }


def ttn_uplink(
    dev: SimDevice, *, ts_ns: int, application: str = TTN_APP, rssi: int = -87, snr: float = 7.5, sf: int = 7
) -> dict[str, Any]:
    iso = rfc3339_ns(ts_ns).replace("+00:00", "Z")
    up: dict[str, Any] = {
        "session_key_id": "AXA50tHUGUucuzS/bCGMNw==",
        "frm_payload": base64.b64encode(dev.payload()).decode(),
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "gtw-north", "eui": "9C5C8E00001A05C4"},
                "time": iso,
                "timestamp": 2463457000,
                "rssi": rssi,
                "channel_rssi": rssi,
                "snr": snr,
                "uplink_token": "ChIKEAoEZ3R3MRIInFyOAAAaBcQQ6L3Vlgk=",
                "channel_index": 2,
            }
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": sf, "coding_rate": "4/5"}},
            "frequency": "868300000",
            "timestamp": 2463457000,
            "time": iso,
        },
        "received_at": iso,
        "consumed_airtime": "0.056576s",
    }
    # TTS omits zero values: no f_cnt for the first uplink, no f_port 0.
    if dev.f_cnt:
        up["f_cnt"] = dev.f_cnt
    if dev.f_port:
        up["f_port"] = dev.f_port
    app_id = application.split("@", 1)[0]
    return {
        "end_device_ids": {
            "device_id": dev.device_id,
            "application_ids": {"application_id": app_id},
            "dev_eui": dev.dev_eui.upper(),
            "join_eui": "800000000000000C",
            "dev_addr": "00BCB929",
        },
        "correlation_ids": [f"as:up:{uuid.uuid4().hex}"],
        "received_at": iso,
        "uplink_message": up,
    }


def uplink_topic(server: Server, application: str, dev: SimDevice, event: str = "up") -> str:
    if server == "chirpstack":
        return f"application/{application}/device/{dev.dev_eui}/event/{event}"
    return f"v3/{application}/devices/{dev.device_id}/{event}"


def join_message(server: Server, dev: SimDevice, *, ts_ns: int, application: str) -> dict[str, Any]:
    iso = rfc3339_ns(ts_ns)
    if server == "chirpstack":
        return {
            "deduplicationId": str(uuid.uuid4()),
            "time": iso,
            "deviceInfo": {"applicationId": application, "deviceName": dev.device_id, "devEui": dev.dev_eui},
            "devAddr": "00189440",
        }
    return {
        "end_device_ids": {
            "device_id": dev.device_id,
            "dev_eui": dev.dev_eui.upper(),
            "application_ids": {"application_id": application.split("@", 1)[0]},
        },
        "received_at": iso,
        "join_accept": {"session_key_id": "AXBSH1Pk6Z0G166RlH16CQ==", "received_at": iso},
    }


def malformed(server: Server, dev: SimDevice, n: int, *, ts_ns: int, application: str) -> bytes:
    """Garbage JSON, a message missing a required field, and bad base64, in turn."""
    kind = n % 3
    if kind == 0:
        return b'{"deduplicationId": "x", "time": '  # truncated JSON
    doc = (
        chirpstack_uplink(dev, ts_ns=ts_ns, application_id=application)
        if server == "chirpstack"
        else ttn_uplink(dev, ts_ns=ts_ns, application=application)
    )
    if kind == 1 and server == "chirpstack":
        del doc["time"], doc["rxInfo"]  # no uplink time at all
    elif kind == 1:
        del doc["end_device_ids"]
    elif server == "chirpstack":
        doc["data"] = "not*base64!"
    else:
        doc["uplink_message"]["frm_payload"] = "not*base64!"
    return json.dumps(doc).encode()


@dataclass(slots=True)
class SimStats:
    uplinks: int = 0  # distinct uplinks (what the gateway must store)
    duplicates: int = 0
    malformed: int = 0
    joins: int = 0
    sent: list[tuple[str, int]] = field(default_factory=list)  # (device id, f_cnt) of each distinct uplink


@dataclass(slots=True)
class NetworkServerSim:
    host: str
    port: int
    server: Server
    devices: list[SimDevice]
    application: str = ""
    rate: float = 10.0  # uplinks per second over all devices; 0 = as fast as possible
    duplicate_every: int = 0  # publish every n-th uplink twice (0 = never)
    malformed_every: int = 0  # after every n-th uplink, publish a malformed message (0 = never)
    rejoin_every: int = 0  # every n-th uplink of a device, it rejoins and restarts its frame counter
    qos: int = 1
    stats: SimStats = field(default_factory=SimStats)
    clock: Callable[[], int] = time.time_ns

    def __post_init__(self) -> None:
        if not self.application:
            self.application = CHIRPSTACK_APP if self.server == "chirpstack" else TTN_APP

    def next_messages(self) -> list[tuple[str, bytes]]:
        """The messages of the next uplink (round robin over devices), faults included."""
        n = self.stats.uplinks
        dev = self.devices[n % len(self.devices)]
        out: list[tuple[str, bytes]] = []
        ts = self.clock()
        if self.rejoin_every and dev.seq and dev.seq % self.rejoin_every == 0:
            dev.f_cnt = 0
            join = join_message(self.server, dev, ts_ns=ts, application=self.application)
            out.append((uplink_topic(self.server, self.application, dev, "join"), json.dumps(join).encode()))
            self.stats.joins += 1
            ts += 1000
        doc = (
            chirpstack_uplink(dev, ts_ns=ts, application_id=self.application)
            if self.server == "chirpstack"
            else ttn_uplink(dev, ts_ns=ts, application=self.application)
        )
        body = json.dumps(doc).encode()
        topic = uplink_topic(self.server, self.application, dev)
        out.append((topic, body))
        self.stats.sent.append((dev.device_id, dev.f_cnt))
        self.stats.uplinks += 1
        if self.duplicate_every and self.stats.uplinks % self.duplicate_every == 0:
            out.append((topic, body))
            self.stats.duplicates += 1
        if self.malformed_every and self.stats.uplinks % self.malformed_every == 0:
            out.append(
                (topic, malformed(self.server, dev, self.stats.malformed, ts_ns=ts, application=self.application))
            )
            self.stats.malformed += 1
        dev.f_cnt += 1
        dev.seq += 1
        return out

    async def run(self, count: int | None = None, *, client: aiomqtt.Client | None = None) -> SimStats:
        """Publish ``count`` uplinks (forever if None) at ``rate``."""
        if client is None:
            async with aiomqtt.Client(self.host, self.port, identifier=f"ns-sim-{uuid.uuid4().hex[:8]}") as c:
                return await self.run(count, client=c)
        start = time.monotonic()
        sent = 0
        while count is None or sent < count:
            for topic, body in self.next_messages():
                await client.publish(topic, body, qos=self.qos)
            sent += 1
            if self.rate > 0:
                delay = start + sent / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        return self.stats
