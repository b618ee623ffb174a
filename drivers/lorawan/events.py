"""Parse network-server MQTT messages into uplink, join and status events.

ChirpStack v4 (docs/protocols.md#1a-chirpstack-v4) and The Things Stack v3
(docs/protocols.md#1b-the-things-stack-v3) publish JSON
whose zero/false fields may be omitted, whose extra fields change between
versions, and whose coding rate moved between two places (TTS PR #5715). The
parsers therefore read only what they need, treat a missing counter or port as
0, ignore everything else, and raise ``EventError`` with a short error kind
(``malformed_json``, ``missing_field``, ``bad_base64``, ``bad_field``) for what
cannot be used.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

ServerKind = Literal["chirpstack", "ttn"]


class EventError(ValueError):
    """A message that cannot be used. ``kind`` is the error-counter label."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True, slots=True)
class Radio:
    """Link quality of the best receiving gateway."""

    gateway_id: str | None = None
    rssi: float | None = None
    snr: float | None = None
    spreading_factor: int | None = None
    frequency_hz: int | None = None
    coding_rate: str | None = None
    gateways: int = 0


@dataclass(frozen=True, slots=True)
class DeviceIds:
    dev_eui: str  # lower-case hex, "" when the server did not say
    device_id: str  # TTS device id, or ChirpStack device name
    application: str

    @property
    def key(self) -> str:
        """Stable identity for deduplication (the EUI when known)."""
        return self.dev_eui or self.device_id


@dataclass(frozen=True, slots=True)
class Uplink:
    ids: DeviceIds
    time_ns: int
    f_cnt: int
    f_port: int
    payload: bytes | None  # None: no FRMPayload (e.g. a MAC-only uplink)
    decoded: Mapping[str, Any] | None  # the server's codec output, if any
    dedup_id: str | None
    radio: Radio
    battery_level: float | None = None  # TTS last_battery_percentage


@dataclass(frozen=True, slots=True)
class Join:
    ids: DeviceIds
    time_ns: int


@dataclass(frozen=True, slots=True)
class Status:
    ids: DeviceIds
    time_ns: int
    battery_level: float | None
    margin: int | None


Event = Uplink | Join | Status

# --- helpers -----------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# ASCII digits only: str.isdigit() accepts "²", which int() refuses, and an
# unbounded digit string hits int()'s 4300-digit limit. A uint64 has 20 digits.
_UINT64_TEXT = re.compile(r"[0-9]{1,20}")
_FRACTION = re.compile(r"^(?P<head>[^.]+?)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:?\d\d)?$", re.IGNORECASE)


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 -> ns since the epoch, keeping all nine fractional digits.

    ``datetime`` keeps only microseconds; servers send nanoseconds, and two
    uplinks of one device within the same microsecond must stay distinct.
    """
    m = _FRACTION.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    tz = m.group("tz") or "+00:00"
    if tz.upper() == "Z":
        tz = "+00:00"
    whole = datetime.fromisoformat(m.group("head") + tz)
    if whole.tzinfo is None:
        raise ValueError(f"time without an offset: {text!r}")
    frac = (m.group("frac") or "")[:9].ljust(9, "0")
    ns = int(whole.timestamp()) * 1_000_000_000 + int(frac)
    if not _INT64_MIN <= ns <= _INT64_MAX:
        # The buffer stores ns in a 64-bit column (years 1677..2262); a year-9999
        # time would fail the commit of every reading queued with it.
        raise ValueError(f"time out of range: {text!r}")
    return ns


def _loads(payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except RecursionError as exc:
        raise EventError("malformed_json", "nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise EventError("malformed_json", str(exc)[:200]) from exc
    if not isinstance(doc, dict):
        raise EventError("malformed_json", f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _obj(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EventError("bad_field", f"{key} is not an object")
    return value


def _list(doc: Mapping[str, Any], key: str) -> Sequence[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise EventError("bad_field", f"{key} is not a list")
    return value


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if isinstance(value, str) and _UINT64_TEXT.fullmatch(value):  # uint64 fields are strings in proto3 JSON
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError("bad_field", f"{key} is not an integer: {value!r:.60}")
    return value


def _num(doc: Mapping[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key, "")
    return value if isinstance(value, str) else ""


def _time(*candidates: Any) -> int:
    for value in candidates:
        if isinstance(value, str) and value:
            try:
                return parse_rfc3339_ns(value)
            except ValueError as exc:
                raise EventError("bad_field", str(exc)) from exc
    raise EventError("missing_field", "no uplink time (time / received_at)")


def _payload(value: Any, key: str) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventError("bad_base64", f"{key} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EventError("bad_base64", f"{key}: {exc}") from exc


def _decoded(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) and value else None


def _best(gateways: list[Radio]) -> Radio:
    """The gateway with the best SNR (then RSSI): SNR says more below the noise floor."""
    usable = [g for g in gateways if g.rssi is not None or g.snr is not None]
    if not usable:
        return gateways[0] if gateways else Radio()
    return max(usable, key=lambda g: (g.snr if g.snr is not None else -1e9, g.rssi if g.rssi is not None else -1e9))


# --- ChirpStack v4 -----------------------------------------------------------


def chirpstack_event_name(topic: str) -> str | None:
    """``application/{app}/device/{eui}/event/{event}`` -> event name."""
    parts = topic.split("/")
    if len(parts) == 6 and parts[0] == "application" and parts[2] == "device" and parts[4] == "event":
        return parts[5]
    return None


def _chirpstack_ids(doc: Mapping[str, Any], topic: str) -> DeviceIds:
    info = _obj(doc, "deviceInfo")
    eui = _str(info, "devEui") or (topic.split("/")[3] if topic.count("/") == 5 else "")
    if not eui:
        raise EventError("missing_field", "deviceInfo.devEui")
    return DeviceIds(eui.lower(), _str(info, "deviceName"), _str(info, "applicationId"))


def parse_chirpstack(topic: str, payload: bytes) -> Event | None:
    """One ChirpStack v4 JSON event; None for events we do not use (ack, log...)."""
    event = chirpstack_event_name(topic)
    if event not in ("up", "join", "status"):
        return None
    doc = _loads(payload)
    ids = _chirpstack_ids(doc, topic)
    rx_info = _list(doc, "rxInfo")
    first_rx = rx_info[0] if rx_info and isinstance(rx_info[0], Mapping) else {}
    time_ns = _time(doc.get("time"), first_rx.get("nsTime"), first_rx.get("gwTime"))
    if event == "join":
        return Join(ids, time_ns)
    if event == "status":
        battery = (
            None if doc.get("batteryLevelUnavailable") or doc.get("externalPowerSource") else _num(doc, "batteryLevel")
        )
        margin = doc.get("margin")
        return Status(ids, time_ns, battery, margin if isinstance(margin, int) else None)
    lora = _obj(_obj(_obj(doc, "txInfo"), "modulation"), "lora")
    tx = _obj(doc, "txInfo")
    sf = lora.get("spreadingFactor")
    gateways = [
        Radio(
            gateway_id=_str(rx, "gatewayId") or None,
            rssi=_num(rx, "rssi"),
            snr=_num(rx, "snr"),
            spreading_factor=sf if isinstance(sf, int) else None,
            frequency_hz=_int(tx, "frequency") or None,
            coding_rate=_str(lora, "codeRate") or None,
        )
        for rx in rx_info
        if isinstance(rx, Mapping)
    ]
    best = _best(gateways) if gateways else Radio(spreading_factor=sf if isinstance(sf, int) else None)
    return Uplink(
        ids=ids,
        time_ns=time_ns,
        f_cnt=_int(doc, "fCnt"),
        f_port=_int(doc, "fPort"),
        payload=_payload(doc.get("data"), "data"),
        decoded=_decoded(doc.get("object")),
        dedup_id=_str(doc, "deduplicationId") or None,
        radio=replace(best, gateways=len(gateways)),
    )


# --- The Things Stack v3 -------------------------------------------------------


def ttn_event_name(topic: str) -> str | None:
    """``v3/{app}@{tenant}/devices/{device}/up`` -> ``up`` (longer suffixes kept whole)."""
    parts = topic.split("/")
    if len(parts) >= 5 and parts[0] == "v3" and parts[2] == "devices":
        return "/".join(parts[4:])
    return None


def _ttn_ids(doc: Mapping[str, Any]) -> DeviceIds:
    ids = _obj(doc, "end_device_ids")
    device_id = _str(ids, "device_id")
    if not device_id:
        raise EventError("missing_field", "end_device_ids.device_id")
    app = _str(_obj(ids, "application_ids"), "application_id")
    return DeviceIds(_str(ids, "dev_eui").lower(), device_id, app)


def parse_ttn(topic: str, payload: bytes) -> Event | None:
    event = ttn_event_name(topic)
    if event not in ("up", "join"):
        return None
    doc = _loads(payload)
    ids = _ttn_ids(doc)
    if event == "join":
        accept = _obj(doc, "join_accept")
        return Join(ids, _time(accept.get("received_at"), doc.get("received_at")))
    up = doc.get("uplink_message")
    if not isinstance(up, Mapping):
        raise EventError("missing_field", "uplink_message")
    settings = _obj(up, "settings")
    lora = _obj(_obj(settings, "data_rate"), "lora")
    sf = lora.get("spreading_factor")
    # coding rate: settings.data_rate.lora.coding_rate since TTS PR #5715, settings.coding_rate before
    coding_rate = _str(lora, "coding_rate") or _str(settings, "coding_rate") or None
    frequency = _int(settings, "frequency") or None
    gateways = []
    for rx in _list(up, "rx_metadata"):
        if not isinstance(rx, Mapping):
            continue
        gw = _obj(rx, "gateway_ids")
        gateways.append(
            Radio(
                gateway_id=_str(gw, "gateway_id") or _str(gw, "eui") or None,
                rssi=_num(rx, "rssi") if "rssi" in rx else _num(rx, "channel_rssi"),
                snr=_num(rx, "snr"),
                spreading_factor=sf if isinstance(sf, int) else None,
                frequency_hz=frequency,
                coding_rate=coding_rate,
            )
        )
    best = (
        _best(gateways)
        if gateways
        else Radio(
            spreading_factor=sf if isinstance(sf, int) else None, frequency_hz=frequency, coding_rate=coding_rate
        )
    )
    battery = _obj(up, "last_battery_percentage")
    return Uplink(
        ids=ids,
        time_ns=_time(up.get("received_at"), doc.get("received_at")),
        f_cnt=_int(up, "f_cnt"),
        f_port=_int(up, "f_port"),
        payload=_payload(up.get("frm_payload"), "frm_payload"),
        decoded=_decoded(up.get("decoded_payload")),
        dedup_id=None,
        radio=replace(best, gateways=len(gateways)),
        battery_level=_num(battery, "value"),
    )


PARSERS = {"chirpstack": parse_chirpstack, "ttn": parse_ttn}
