"""Parsing network-server messages: the documented examples and broken ones.

Examples from docs/protocols.md#1a-chirpstack-v4 and docs/protocols.md#1b-the-things-stack-v3.
"""

from __future__ import annotations

import json

import pytest

from gateway.drivers.lorawan.events import (
    EventError,
    Join,
    Status,
    Uplink,
    parse_chirpstack,
    parse_rfc3339_ns,
    parse_ttn,
)

CS_TOPIC = "application/17c82e96-be03-4f38-aef3-f83d48582d97/device/0101010101010101/event/up"

# ChirpStack v4 docs `up` example, verbatim data (§1a [S1]); fCnt/adr/confirmed omitted (older behaviour).
CS_DOC_UP = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2022-07-18T09:34:15.775023242+00:00",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
        "applicationName": "Test application",
        "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
        "deviceProfileName": "Test device-profile",
        "deviceName": "Test device",
        "devEui": "0101010101010101",
        "tags": {"key": "value"},
    },
    "devAddr": "00189440",
    "dr": 1,
    "fPort": 1,
    "data": "qg==",
    "rxInfo": [
        {
            "gatewayId": "0016c001f153a14c",
            "uplinkId": 4217106255,
            "rssi": -36,
            "snr": 10.5,
            "context": "E3OWOQ==",
            "metadata": {"region_name": "eu868", "region_common_name": "EU868"},
        }
    ],
    "txInfo": {
        "frequency": 867100000,
        "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 11, "codeRate": "CR_4_5"}},
    },
}

# The Things Stack docs uplink example, verbatim data (§1b [S11]).
TTN_DOC_UP = {
    "end_device_ids": {
        "device_id": "dev1",
        "application_ids": {"application_id": "app1"},
        "dev_eui": "0004A30B001C0530",
        "join_eui": "800000000000000C",
        "dev_addr": "00BCB929",
    },
    "correlation_ids": ["as:up:01E0WZGT6Y7657CPFPE5WEYDSQ"],
    "received_at": "2020-02-12T15:15:46.014773143Z",
    "uplink_message": {
        "session_key_id": "AXA50tHUGUucuzS/bCGMNw==",
        "f_cnt": 1,
        "frm_payload": "gkHe",
        "decoded_payload": {"temperature": 1.0, "luminosity": 0.64},
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "gtw1", "eui": "9C5C8E00001A05C4"},
                "time": "2020-02-12T15:15:45.787Z",
                "timestamp": 2463457000,
                "rssi": -35,
                "channel_rssi": -35,
                "snr": 5,
                "uplink_token": "ChIKEAoEZ3R3MRIInFyOAAAaBcQQ6L3Vlgk=",
                "channel_index": 2,
            }
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
            "data_rate_index": 5,
            "coding_rate": "4/6",
            "frequency": "868300000",
            "timestamp": 2463457000,
            "time": "2020-02-12T15:15:45.787Z",
        },
        "consumed_airtime": "0.056576s",
        "received_at": "2020-02-12T15:15:45.789585559Z",
    },
}


def test_rfc3339_keeps_nanoseconds() -> None:
    assert parse_rfc3339_ns("2022-07-18T09:34:15.775023242+00:00") == 1658136855_775023242
    assert parse_rfc3339_ns("2020-02-12T15:15:45.787Z") == 1581520545_787000000
    assert parse_rfc3339_ns("2020-02-12T16:15:45+01:00") == 1581520545_000000000


def test_chirpstack_doc_example() -> None:
    up = parse_chirpstack(CS_TOPIC, json.dumps(CS_DOC_UP).encode())
    assert isinstance(up, Uplink)
    assert up.ids.dev_eui == "0101010101010101"
    assert up.payload == b"\xaa"
    assert (up.f_cnt, up.f_port) == (0, 1)  # fCnt omitted -> 0
    assert up.time_ns == 1658136855_775023242
    assert up.dedup_id == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
    r = up.radio
    assert (r.gateway_id, r.rssi, r.snr, r.spreading_factor, r.frequency_hz) == (
        "0016c001f153a14c",
        -36,
        10.5,
        11,
        867100000,
    )
    assert r.coding_rate == "CR_4_5"


def test_chirpstack_picks_best_gateway_and_ignores_extra_fields() -> None:
    doc = json.loads(json.dumps(CS_DOC_UP))
    doc["rxInfo"].append({"gatewayId": "aa", "rssi": -110, "snr": -3.0, "crcStatus": "CRC_OK", "future": [1]})
    doc["rxInfo"].insert(0, {"gatewayId": "bb", "rssi": -20, "snr": 12.25})
    doc["relayRxInfo"] = {"whatever": 1}
    doc.update(adr=True, fCnt=42, confirmed=False, object={"temperature": 3})
    up = parse_chirpstack(CS_TOPIC, json.dumps(doc).encode())
    assert isinstance(up, Uplink)
    assert (up.radio.gateway_id, up.radio.gateways, up.f_cnt) == ("bb", 3, 42)
    assert up.decoded == {"temperature": 3}


def test_chirpstack_status_join_and_other_events() -> None:
    base = "application/a/device/0101010101010101/event/"
    status = parse_chirpstack(
        base + "status",
        json.dumps(
            {
                "deduplicationId": "x",
                "time": "2022-07-18T09:34:15+00:00",
                "deviceInfo": {"devEui": "0101010101010101"},
                "margin": 10,
                "batteryLevel": 88.3,
            }
        ).encode(),
    )
    assert isinstance(status, Status) and status.battery_level == 88.3 and status.margin == 10
    join = parse_chirpstack(
        base + "join",
        json.dumps({"time": "2022-07-18T09:34:15+00:00", "deviceInfo": {"devEui": "0101010101010101"}}).encode(),
    )
    assert isinstance(join, Join) and join.ids.key == "0101010101010101"
    assert parse_chirpstack(base + "log", b"not even json") is None


def test_chirpstack_dev_eui_from_topic_when_device_info_is_missing() -> None:
    doc = {k: v for k, v in CS_DOC_UP.items() if k != "deviceInfo"}
    up = parse_chirpstack(CS_TOPIC.replace("0101010101010101", "0A0B0C0D0E0F1011"), json.dumps(doc).encode())
    assert isinstance(up, Uplink) and up.ids.dev_eui == "0a0b0c0d0e0f1011"


def test_ttn_doc_example_with_old_coding_rate_place() -> None:
    up = parse_ttn("v3/app1@ttn/devices/dev1/up", json.dumps(TTN_DOC_UP).encode())
    assert isinstance(up, Uplink)
    assert (up.ids.device_id, up.ids.dev_eui, up.ids.application) == ("dev1", "0004a30b001c0530", "app1")
    assert up.payload == bytes.fromhex("8241de")
    assert (up.f_cnt, up.f_port) == (1, 0)  # f_port missing in the docs example -> 0
    assert up.time_ns == 1581520545_789585559  # network server time, not the gateway's
    assert (up.radio.rssi, up.radio.snr, up.radio.spreading_factor) == (-35, 5, 7)
    assert up.radio.frequency_hz == 868300000  # a string in the JSON
    assert up.radio.coding_rate == "4/6"
    assert up.decoded == {"temperature": 1.0, "luminosity": 0.64}


def test_ttn_new_coding_rate_place_and_omitted_zero_fields() -> None:
    doc = json.loads(json.dumps(TTN_DOC_UP))
    up_msg = doc["uplink_message"]
    del up_msg["settings"]["coding_rate"], up_msg["f_cnt"], up_msg["decoded_payload"]
    up_msg["settings"]["data_rate"]["lora"]["coding_rate"] = "4/5"
    up = parse_ttn("v3/app1@ttn/devices/dev1/up", json.dumps(doc).encode())
    assert isinstance(up, Uplink)
    assert (up.radio.coding_rate, up.f_cnt, up.decoded) == ("4/5", 0, None)


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda d: b"{not json", "malformed_json"),
        (lambda d: b"[1, 2]", "malformed_json"),
        (lambda d: b"\xff\xfe", "malformed_json"),
        (lambda d: {**d, "data": "qg=*"}, "bad_base64"),
        (lambda d: {**d, "data": 17}, "bad_base64"),
        (lambda d: {k: v for k, v in d.items() if k != "deviceInfo"}, "missing_field"),
        (lambda d: {k: v for k, v in d.items() if k not in ("time", "rxInfo")}, "missing_field"),
        (lambda d: {**d, "time": "yesterday"}, "bad_field"),
        (lambda d: {**d, "fCnt": "many"}, "bad_field"),
        (lambda d: {**d, "rxInfo": {"rssi": 1}}, "bad_field"),
        # issue 8, found by fuzzing: these raised ValueError / RecursionError instead
        (lambda d: {**d, "fCnt": "\u00b2"}, "bad_field"),  # "²".isdigit() is True, int("²") fails
        (lambda d: {**d, "fCnt": "7" * 4301}, "bad_field"),  # over int()'s 4300-digit limit
        (lambda d: {**d, "fPort": "\u0663"}, "bad_field"),  # a non-ASCII decimal digit
        (lambda d: b'{"fCnt": ' + b"7" * 4301 + b"}", "malformed_json"),
        (lambda d: b"[" * 100_000, "malformed_json"),
        (lambda d: {**d, "time": "9999-12-31T23:59:59Z"}, "bad_field"),  # beyond a 64-bit ns column
    ],
)
def test_chirpstack_broken_messages(mutate, kind) -> None:  # type: ignore[no-untyped-def]
    out = mutate(dict(CS_DOC_UP))
    body = out if isinstance(out, bytes) else json.dumps(out).encode()
    topic = CS_TOPIC.replace("0101010101010101", "") if kind == "missing_field" else CS_TOPIC
    with pytest.raises(EventError) as info:
        parse_chirpstack(topic, body)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda d: {k: v for k, v in d.items() if k != "uplink_message"}, "missing_field"),
        (lambda d: {k: v for k, v in d.items() if k != "end_device_ids"}, "missing_field"),
        (lambda d: {**d, "uplink_message": {**d["uplink_message"], "frm_payload": "%%%"}}, "bad_base64"),
        (lambda d: {**d, "uplink_message": {**d["uplink_message"], "f_cnt": "\u00b2"}}, "bad_field"),
        (lambda d: {**d, "uplink_message": {**d["uplink_message"], "f_cnt": "9" * 5000}}, "bad_field"),
    ],
)
def test_ttn_broken_messages(mutate, kind) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EventError) as info:
        parse_ttn("v3/app1@ttn/devices/dev1/up", json.dumps(mutate(dict(TTN_DOC_UP))).encode())
    assert info.value.kind == kind
