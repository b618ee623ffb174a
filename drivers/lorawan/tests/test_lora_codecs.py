"""Codecs against the vendors' published example payloads.

From docs/protocols.md#2-cayenne-lpp and docs/protocols.md#3-vendor-lorawan-payloads.
"""

from __future__ import annotations

import base64

import pytest

from gateway.drivers.lorawan.codecs import DecodeResult, Measurement, available, make_codec
from gateway.drivers.lorawan.codecs.cayenne import CayenneLPP, G
from gateway.drivers.lorawan.codecs.decentlab import Decentlab
from gateway.drivers.lorawan.codecs.dragino import DraginoLHT65
from gateway.drivers.lorawan.codecs.elsys import Elsys
from gateway.drivers.lorawan.config import DeviceProfile
from gateway.profiles import load_profile
from gateway.quantities import QUANTITIES
from gateway.simulators.lorawan.payloads import ENCODERS, expected_values


def values(result: DecodeResult) -> list[tuple[str, float | int | bool | str, str, str | None]]:
    return [(m.quantity, m.value, m.unit, m.channel) for m in result.values]


# --- Cayenne LPP (§2, myDevices worked examples) ------------------------------


def test_cayenne_two_temperatures() -> None:
    payload = base64.b64decode("A2cBEAVnAP8=")  # 03 67 01 10 05 67 00 FF
    r = CayenneLPP().decode(payload, 1)
    assert values(r) == [("temperature", 27.2, "Cel", "3"), ("temperature", 25.5, "Cel", "5")]
    assert r.problems == []


def test_cayenne_negative_temperature_and_accelerometer() -> None:
    r = CayenneLPP().decode(bytes.fromhex("0167FFD7067104D2FB2E0000"), 1)
    got = {(m.quantity, m.channel): m.value for m in r.values}
    assert got[("temperature", "1")] == -4.1
    assert got[("acceleration_x", "6")] == pytest.approx(1.234 * G, abs=1e-5)
    assert got[("acceleration_y", "6")] == pytest.approx(-1.234 * G, abs=1e-5)
    assert got[("acceleration_z", "6")] == 0


def test_cayenne_gps() -> None:
    r = CayenneLPP().decode(bytes.fromhex("018806765FF2960A0003E8"), 1)
    assert values(r) == [
        ("latitude", 42.3519, "lat", "1"),
        ("longitude", -87.9094, "lon", "1"),
        ("altitude", 10.0, "m", "1"),
    ]


@pytest.mark.parametrize(
    ("hex_payload", "quantity", "value", "unit"),
    [
        ("00000A", "digital_input", 10, "/"),
        ("010119", "digital_output", 25, "/"),
        ("00020208", "analog_input", 5.2, "/"),
        ("010309CE", "analog_output", 25.1, "/"),
        ("0A65007B", "illuminance", 123, "lx"),
        ("056601", "presence", 1, "/"),
        ("007327BF", "pressure", 1017.5, "hPa"),
        ("016864", "relative_humidity", 50.0, "%RH"),
        ("01740159", "voltage", 3.45, "V"),
        ("017503E8", "current", 1.0, "A"),
        ("01800960", "active_power", 2400, "W"),
        ("0183000F4240", "energy_total", 1000.0, "kWh"),
    ],
)
def test_cayenne_type_table(hex_payload: str, quantity: str, value: float, unit: str) -> None:
    (m,) = CayenneLPP().decode(bytes.fromhex(hex_payload), 1).values
    assert (m.quantity, m.unit) == (quantity, unit)
    assert m.value == pytest.approx(value)


def test_cayenne_unknown_type_keeps_earlier_fields() -> None:
    r = CayenneLPP().decode(bytes.fromhex("03670110" + "05FE00"), 1)
    assert values(r) == [("temperature", 27.2, "Cel", "3")]
    assert r.problems == ["unknown_type"]


def test_cayenne_truncated_value() -> None:
    r = CayenneLPP().decode(bytes.fromhex("0367011005670"[:-1]), 1)
    assert [m.value for m in r.values] == [27.2]
    assert r.problems == ["truncated_payload"]


def test_cayenne_channel_rename_uses_canonical_unit() -> None:
    r = CayenneLPP({"channels": {"4": "co2"}}).decode(bytes.fromhex("0402" + "0190"), 1)
    assert values(r) == [("co2", 4.0, "ppm", "4")]


# --- Dragino LHT65 (§3a) -------------------------------------------------------


def test_lht65_vendor_vector() -> None:
    r = DraginoLHT65().decode(bytes.fromhex("CBF60B0D0376010ADD7FFF"), 2)
    assert values(r) == [
        ("battery_voltage", 3.062, "V", None),
        ("temperature", 28.29, "Cel", None),
        ("relative_humidity", 88.6, "%RH", None),
        ("temperature", 27.81, "Cel", "ext"),
    ]
    assert r.problems == []


def test_lht65_negative_probe_and_absent_probe() -> None:
    neg = DraginoLHT65().decode(bytes.fromhex("CBA40B0D037601F54F7FFF"), 2)
    assert neg.values[0].value == 2.98  # 0xCBA4 -> 2980 mV (§3a, [S19])
    assert neg.values[-1] == Measurement("temperature", -27.37, "Cel", "ext")
    absent = DraginoLHT65().decode(bytes.fromhex("CBF60B0D0376017FFF7FFF"), 2)
    assert [m.channel for m in absent.values] == [None, None, None]


def test_lht65_short_frame_is_counted() -> None:
    assert DraginoLHT65().decode(bytes.fromhex("CBF60B0D"), 2).problems == ["truncated_payload"]


# --- Elsys (§3b) ---------------------------------------------------------------


def test_elsys_vendor_vector() -> None:
    r = Elsys().decode(bytes.fromhex("0100E202290400270506"), 5)
    assert values(r) == [
        ("temperature", 22.6, "Cel", None),
        ("relative_humidity", 41, "%RH", None),
        ("illuminance", 39, "lx", None),
        ("motion_count", 6, "count", "pir"),
    ]


def test_elsys_co2_battery_and_unknown_type() -> None:
    r = Elsys().decode(bytes.fromhex("060384" + "070E10" + "FF0102"), 5)
    assert values(r) == [("co2", 900, "ppm", None), ("battery_voltage", 3.6, "V", None)]
    assert r.problems == ["unknown_type"]


# --- Decentlab (§3c) -----------------------------------------------------------


def sht35() -> Decentlab:
    _path, raw = load_profile("lorawan-decentlab-dl-sht35")
    profile = DeviceProfile.model_validate(raw)
    return Decentlab(profile.codec_options)


def test_decentlab_sht35_vendor_vector() -> None:
    r = sht35().decode(bytes.fromhex("02030E000364A079B10C60"), 1)
    got = {m.quantity: m.value for m in r.values}
    assert got["temperature"] == pytest.approx(23.7877, abs=1e-4)
    assert got["relative_humidity"] == pytest.approx(47.5364, abs=1e-4)
    assert got["battery_voltage"] == 3.168


def test_decentlab_battery_only_frame() -> None:
    r = sht35().decode(bytes.fromhex("02030E00020C60"), 1)
    assert values(r) == [("battery_voltage", 3.168, "V", None)]


def test_decentlab_without_product_definition_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="profile"):
        Decentlab({})


# --- registry and simulator round trip -----------------------------------------------


def test_registry_finds_all_codecs() -> None:
    assert {"cayenne_lpp", "dragino_lht65", "elsys", "decentlab"} <= set(available())
    assert isinstance(make_codec("elsys"), Elsys)


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_simulator_payloads_decode_to_expected_values(codec: str) -> None:
    options = {"channels": {"3": "battery_voltage"}} if codec == "cayenne_lpp" else {}
    decoder = sht35() if codec == "decentlab" else make_codec(codec, options)
    encode, port = ENCODERS[codec]
    for seq in (0, 7, 123):
        got = {
            m.quantity: m.value for m in decoder.decode(encode(seq), port).values if m.channel in (None, "1", "2", "3")
        }
        for quantity, value in expected_values(seq).items():
            assert got[quantity] == pytest.approx(value, abs=0.01), (codec, seq, quantity)


def test_codec_quantities_are_canonical_or_documented_custom() -> None:
    custom = {
        "generic",
        "percentage",
        "concentration",
        "direction",
        "unixtime",
        "colour_r",
        "colour_g",
        "colour_b",
        "angular_velocity_x",
        "angular_velocity_y",
        "angular_velocity_z",
        "motion_count",
        "pulse_count_delta",
        "water_leak",
        "link_margin",
    }
    from gateway.drivers.lorawan.codecs import cayenne

    for size, decoder in cayenne.TYPES.values():
        for quantity, _value, unit in decoder(bytes(size)):
            assert quantity in custom or QUANTITIES[quantity].unit == unit, quantity
