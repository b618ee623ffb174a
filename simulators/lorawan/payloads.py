"""Encoders producing realistic payloads for the simulated LoRaWAN devices.

They are the inverse of the codecs in drivers/lorawan/codecs, following the
same vendor layouts (docs/protocols.md#2-cayenne-lpp, docs/protocols.md#3-vendor-lorawan-payloads), so a
simulated uplink decodes to
values the test knows in advance.
"""

from __future__ import annotations

from collections.abc import Callable


def _be(value: int, size: int, signed: bool = False) -> bytes:
    return value.to_bytes(size, "big", signed=signed)


def expected_values(seq: int) -> dict[str, float]:
    """The values a simulated device sends in its ``seq``-th uplink."""
    return {
        "temperature": round(15.0 + (seq % 100) / 10, 1),
        "relative_humidity": float(40 + seq % 40),
        "battery_voltage": 3.0 + (seq % 10) / 100,
    }


def cayenne(seq: int) -> bytes:
    v = expected_values(seq)
    return (
        b"\x01\x67" + _be(round(v["temperature"] * 10), 2, signed=True)
        + b"\x02\x68" + _be(round(v["relative_humidity"] * 2), 1)
        + b"\x03\x74" + _be(round(v["battery_voltage"] * 100), 2)
    )  # fmt: skip


def dragino_lht65(seq: int) -> bytes:
    v = expected_values(seq)
    bat = 0xC000 | round(v["battery_voltage"] * 1000)
    return (
        _be(bat, 2)
        + _be(round(v["temperature"] * 100), 2, signed=True)
        + _be(round(v["relative_humidity"] * 10), 2)
        + b"\x00\x7f\xff\x7f\xff"  # no external probe
    )


def elsys(seq: int) -> bytes:
    v = expected_values(seq)
    return (
        b"\x01" + _be(round(v["temperature"] * 10), 2, signed=True)
        + b"\x02" + _be(round(v["relative_humidity"]), 1)
        + b"\x07" + _be(round(v["battery_voltage"] * 1000), 2)
    )  # fmt: skip


def decentlab_sht35(seq: int) -> bytes:
    v = expected_values(seq)
    t_raw = round((v["temperature"] + 45) * 65535 / 175)
    rh_raw = round(v["relative_humidity"] * 65535 / 100)
    return b"\x02\x03\x0e\x00\x03" + _be(t_raw, 2) + _be(rh_raw, 2) + _be(round(v["battery_voltage"] * 1000), 2)


ENCODERS: dict[str, tuple[Callable[[int], bytes], int]] = {
    # codec name -> (encoder, fPort)
    "cayenne_lpp": (cayenne, 1),
    "dragino_lht65": (dragino_lht65, 2),
    "elsys": (elsys, 5),
    "decentlab": (decentlab_sht35, 1),
}
