"""The position registry and NMEA fix validity."""

from __future__ import annotations

from gateway.drivers.serial.measurement import Position
from gateway.drivers.serial.nmea import parse_fix
from gateway.drivers.serial.position import PositionRegistry
from gateway.simulators.serial.devices import nmea_sentence

from gateway.model import Quality


def test_fresh_fix_gives_tags_and_stale_fix_gives_none() -> None:
    reg = PositionRegistry()
    reg.publish("gps", Position(53.3613371, -6.5056204, 61.7), now=100.0)
    assert reg.tags("gps", max_age_s=10, now=105.0) == {"lat": "53.361337", "lon": "-6.505620"}
    assert reg.tags("gps", max_age_s=10, now=111.0) == {}
    assert reg.tags("other", max_age_s=10, now=105.0) == {}
    reg.clear()
    assert reg.latest("gps", max_age_s=10, now=100.0) is None


def test_rmc_warning_status_gives_no_position_and_uncertain_motion() -> None:
    fix = parse_fix(nmea_sentence("GPRMC,123519,V,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"))
    assert fix is not None and fix.position is None
    assert {m.quantity for m in fix.measurements} == {"speed", "course"}
    assert {m.quality for m in fix.measurements} == {Quality.UNCERTAIN}


def test_rmc_accepts_11_12_and_13_fields() -> None:
    base = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
    for body in (base, base + ",A", base + ",A,V"):
        fix = parse_fix(nmea_sentence(body))
        assert fix is not None and fix.position is not None


def test_nmea_sentence_selection_and_publishing() -> None:
    from gateway.drivers.serial.config import NMEADecoder
    from gateway.drivers.serial.stream import StreamDecoder
    from gateway.simulators.serial.devices import gps_frames

    gga, rmc, _ = gps_frames(0)
    both = StreamDecoder(NMEADecoder(type="nmea")).feed(gga + rmc, 0.0)
    assert [sorted(m.quantity for m in f) for f in both.frames] == [
        ["altitude", "gps_fix_quality", "gps_satellites", "latitude", "longitude"],
        ["course", "speed"],  # RMC does not repeat the position GGA already gave
    ]
    assert both.position is not None
    rmc_only = StreamDecoder(NMEADecoder(type="nmea", sentences=["RMC"])).feed(gga + rmc, 0.0)
    assert [sorted(m.quantity for m in f) for f in rmc_only.frames] == [["course", "latitude", "longitude", "speed"]]
    private = StreamDecoder(NMEADecoder(type="nmea", publish_position=False)).feed(gga + rmc, 0.0)
    assert private.position is None and len(private.frames) == 2
