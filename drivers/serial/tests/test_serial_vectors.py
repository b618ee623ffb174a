"""Datasheet and worked-example vectors (section cited per test).

From docs/protocols.md#5-serial-particulate-sensors and docs/protocols.md#7-nmea-0183-gps-gga-and-rmc.
"""

from __future__ import annotations

import pytest

from gateway.drivers.serial.measurement import Measurement
from gateway.drivers.serial.nmea import NMEAError, parse_fix
from gateway.drivers.serial.particulates import (
    decode_pms5003,
    decode_sds011,
    pms5003_framer,
    pms5003_read,
    pms5003_set_passive,
    sds011_framer,
    sds011_query,
    sds011_set_query_mode,
)
from gateway.model import Quality


def _values(ms: list[Measurement]) -> dict[str, float | int | bool | str]:
    return {m.quantity: m.value for m in ms}


# --- 5a. Nova SDS011 ------------------------------------------------------------


def test_sds011_real_capture_5a() -> None:
    frame = bytes.fromhex("AA C0 8C 00 94 00 BC F9 D5 AB")
    framed = sds011_framer().feed(frame, 0.0)
    assert framed.errors == []
    assert framed.frames == [frame]
    assert _values(decode_sds011(frame)) == {"pm2_5": 14.0, "pm10": 14.8}
    assert {m.unit for m in decode_sds011(frame)} == {"ug/m3"}


def test_sds011_synthetic_5a() -> None:
    frame = bytes.fromhex("AA C0 7B 00 C8 01 A1 60 45 AB")
    assert sds011_framer().feed(frame, 0.0).frames == [frame]
    assert _values(decode_sds011(frame)) == {"pm2_5": 12.3, "pm10": 45.6}


def test_sds011_bad_checksum_is_rejected_5a() -> None:
    framed = sds011_framer().feed(bytes.fromhex("AA C0 8C 00 94 00 BC F9 D6 AB"), 0.0)
    assert framed.frames == []
    assert framed.errors == ["bad_checksum"]


def test_sds011_out_of_range_is_marked_bad() -> None:
    body = (10000).to_bytes(2, "little") + (50).to_bytes(2, "little") + b"\x00\x00"
    frame = b"\xaa\xc0" + body + bytes([sum(body) & 0xFF, 0xAB])
    pm25, pm10 = decode_sds011(frame)
    assert (pm25.value, pm25.quality) == (1000.0, Quality.BAD)
    assert pm10.quality is Quality.GOOD


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (sds011_set_query_mode(False), "AA B4 02 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 01 AB"),
        (sds011_set_query_mode(True), "AA B4 02 01 01 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),
        (sds011_query(), "AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),
    ],
)
def test_sds011_command_frames_5a(command: bytes, expected: str) -> None:
    assert command == bytes.fromhex(expected)


def test_sds011_command_reply_is_a_frame_without_measurements() -> None:
    body = bytes([0x02, 1, 1, 0, 0xA1, 0x60])
    reply = b"\xaa\xc5" + body + bytes([sum(body) & 0xFF, 0xAB])
    framed = sds011_framer().feed(reply, 0.0)
    assert framed.frames == [reply] and framed.errors == []
    assert decode_sds011(reply) == []


# --- 5b. Plantower PMS5003 ------------------------------------------------------

PMS_REAL = bytes.fromhex(
    "42 4D 00 1C 00 00 00 08 00 08 00 00 00 08 00 08 00 D2 00 46 00 2D 00 1E 00 00 00 00 97 00 02 C5"
)
PMS_SYNTHETIC = bytes.fromhex(
    "42 4D 00 1C 00 0C 00 12 00 15 00 0B 00 11 00 15 09 06 02 B2 00 78 00 0E 00 04 00 01 97 00 02 F4"
)


def test_pms5003_real_capture_5b() -> None:
    framed = pms5003_framer().feed(PMS_REAL, 0.0)
    assert framed.frames == [PMS_REAL] and framed.errors == []
    assert _values(decode_pms5003(PMS_REAL)) == {"pm1": 0.0, "pm2_5": 8.0, "pm10": 8.0}
    counts = _values(decode_pms5003(PMS_REAL, particle_counts=True))
    assert counts == {
        "pm1": 0.0,
        "pm2_5": 8.0,
        "pm10": 8.0,
        "particle_count_0_3": 210,
        "particle_count_0_5": 70,
        "particle_count_1": 45,
        "particle_count_2_5": 30,
        "particle_count_5": 0,
        "particle_count_10": 0,
    }


def test_pms5003_synthetic_reports_atmospheric_not_cf1_5b() -> None:
    # CF=1 words are 12/18/21, atmospheric 11/17/21: the atmospheric ones are reported.
    assert _values(decode_pms5003(PMS_SYNTHETIC)) == {"pm1": 11.0, "pm2_5": 17.0, "pm10": 21.0}


def test_pms5003_bad_checksum_is_rejected_5b() -> None:
    framed = pms5003_framer().feed(PMS_REAL[:-1] + b"\xc6", 0.0)
    assert framed.frames == [] and framed.errors == ["bad_checksum"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (pms5003_set_passive(False), "42 4D E1 00 01 01 71"),
        (pms5003_set_passive(True), "42 4D E1 00 00 01 70"),
        (pms5003_read(), "42 4D E2 00 00 01 71"),
    ],
)
def test_pms5003_command_frames_5b(command: bytes, expected: str) -> None:
    assert command == bytes.fromhex(expected)


# --- 7. NMEA 0183 ---------------------------------------------------------------


def test_nmea_gga_classic_7() -> None:
    fix = parse_fix(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n")
    assert fix is not None and fix.position is not None
    values = _values(fix.measurements)
    assert values["latitude"] == pytest.approx(48.1173, abs=1e-6)
    assert values["longitude"] == pytest.approx(11.516667, abs=1e-6)
    assert values["altitude"] == 545.4
    assert values["gps_fix_quality"] == 1
    assert values["gps_satellites"] == 8


def test_nmea_rmc_classic_7() -> None:
    fix = parse_fix(b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A")
    assert fix is not None
    values = _values(fix.measurements)
    assert values["speed"] == pytest.approx(22.4 * 1852 / 3600)
    assert values["course"] == 84.4
    assert values["latitude"] == pytest.approx(48.1173, abs=1e-6)


def test_nmea_multi_gnss_pair_west_is_negative_7() -> None:
    gga = parse_fix(b"$GNGGA,092750.00,5321.68020,N,00630.33720,W,1,08,1.03,61.7,M,55.2,M,,*68")
    rmc = parse_fix(b"$GNRMC,092750.00,A,5321.68020,N,00630.33720,W,0.02,,270125,,,A,V*37")
    assert gga is not None and rmc is not None
    assert gga.position is not None and rmc.position is not None
    for pos in (gga.position, rmc.position):
        assert pos.latitude == pytest.approx(53.361337, abs=1e-6)
        assert pos.longitude == pytest.approx(-6.505620, abs=1e-6)
    assert "course" not in _values(rmc.measurements)  # empty field = no data


def test_nmea_wrong_checksum_is_rejected_7() -> None:
    with pytest.raises(NMEAError) as info:
        parse_fix(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48")
    assert info.value.kind == "bad_checksum"


def test_nmea_no_fix_reports_quality_but_no_position() -> None:
    from gateway.simulators.serial.devices import nmea_sentence

    fix = parse_fix(nmea_sentence("GPGGA,123519,0000.000,N,00000.000,E,0,00,,,M,,M,,"))
    assert fix is not None and fix.position is None
    assert _values(fix.measurements) == {"gps_fix_quality": 0, "gps_satellites": 0}


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"GPGGA,1*00", "malformed_nmea"),  # no '$'
        (b"$GPGGA,123519*ZZ", "malformed_nmea"),  # checksum digits not hex
        (b"$GP\xff*00", "malformed_nmea"),  # not ASCII
        (b"$GPGGA,12*", "malformed_nmea"),  # checksum cut off
        (b"$GPGGA,123519,4807.038,N*00", "bad_checksum"),
    ],
)
def test_nmea_malformed_lines_raise_a_counted_kind(line: bytes, kind: str) -> None:
    with pytest.raises(NMEAError) as info:
        parse_fix(line)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    "body",
    [
        "GPGGA,x,y",  # too few fields
        "GPGGA,123519,48x7.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",  # not a number
        "GPGGA,123519,4807.038,Q,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",  # bad hemisphere
        "GPGGA,123519,9907.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",  # latitude > 90
        "GPRMC,123519,A,4807.038,N",  # too few fields
        "GPGGAX,1",  # bad tag
    ],
)
def test_nmea_valid_checksum_but_bad_content_is_malformed(body: str) -> None:
    from gateway.simulators.serial.devices import nmea_sentence

    with pytest.raises(NMEAError) as info:
        parse_fix(nmea_sentence(body))
    assert info.value.kind == "malformed_nmea"


def test_nmea_other_sentences_are_ignored() -> None:
    from gateway.simulators.serial.devices import nmea_sentence

    assert parse_fix(nmea_sentence("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1")) is None
