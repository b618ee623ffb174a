"""Turn one parsed uplink into readings: decoded values plus radio metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.drivers.lorawan.codecs import DecodeResult
from gateway.drivers.lorawan.config import ObjectField, RadioMode
from gateway.drivers.lorawan.events import Status, Uplink

from gateway.driver import DriverContext
from gateway.model import Reading


def object_values(decoded: Mapping[str, Any], fields: Mapping[str, ObjectField]) -> DecodeResult:
    """Map the server's decoded object through ``object_fields`` (dotted keys reach into nested objects)."""
    result = DecodeResult()
    for path, spec in fields.items():
        node: Any = decoded
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            continue  # the device did not report this field in this uplink
        if isinstance(node, bool):
            result.add(spec.quantity, int(node), spec.unit, spec.channel)
        elif isinstance(node, int | float):
            result.add(spec.quantity, node * spec.scale if spec.scale != 1 else node, spec.unit, spec.channel)
        else:
            result.problems.append("bad_decoded_value")
    return result


def radio_tags(uplink: Uplink) -> dict[str, str]:
    r = uplink.radio
    tags = {"f_cnt": str(uplink.f_cnt)}
    if r.gateway_id:
        tags["gateway_id"] = r.gateway_id
    if r.rssi is not None:
        tags["rssi"] = str(r.rssi)
    if r.snr is not None:
        tags["snr"] = str(r.snr)
    if r.spreading_factor is not None:
        tags["sf"] = str(r.spreading_factor)
    return tags


def uplink_readings(
    ctx: DriverContext,
    *,
    device: str,
    uplink: Uplink,
    values: DecodeResult,
    base_tags: Mapping[str, str],
    radio: RadioMode,
) -> list[Reading]:
    ts = uplink.time_ns
    tags = dict(base_tags)
    if uplink.ids.dev_eui:
        tags["dev_eui"] = uplink.ids.dev_eui
    if radio in ("tags", "both"):
        tags.update(radio_tags(uplink))
    out = []
    for m in values.values:
        t = tags if m.channel is None else {**tags, "channel": m.channel}
        out.append(ctx.reading(device, m.quantity, m.value, m.unit, ts_ns=ts, tags=t))
    if uplink.battery_level is not None:
        out.append(ctx.reading(device, "battery_level", uplink.battery_level, "%EL", ts_ns=ts, tags=tags))
    if radio in ("readings", "both"):
        r = uplink.radio
        rtags = {**tags, "gateway_id": r.gateway_id} if r.gateway_id else tags
        out.append(ctx.reading(device, "frame_counter", uplink.f_cnt, "count", ts_ns=ts, tags=rtags))
        if r.rssi is not None:
            out.append(ctx.reading(device, "rssi", r.rssi, "dBm", ts_ns=ts, tags=rtags))
        if r.snr is not None:
            out.append(ctx.reading(device, "snr", r.snr, "dB", ts_ns=ts, tags=rtags))
        if r.spreading_factor is not None:
            out.append(ctx.reading(device, "spreading_factor", r.spreading_factor, "count", ts_ns=ts, tags=rtags))
    return out


def status_readings(ctx: DriverContext, *, device: str, status: Status, base_tags: Mapping[str, str]) -> list[Reading]:
    tags = dict(base_tags)
    if status.ids.dev_eui:
        tags["dev_eui"] = status.ids.dev_eui
    out = []
    if status.battery_level is not None:
        out.append(ctx.reading(device, "battery_level", status.battery_level, "%EL", ts_ns=status.time_ns, tags=tags))
    if status.margin is not None:
        out.append(ctx.reading(device, "link_margin", status.margin, "dB", ts_ns=status.time_ns, tags=tags))
    return out
