"""End to end over pty pairs: simulator -> serial driver -> readings, faults and unplug included."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from serial_harness import running_driver, wait_until

from gateway.drivers.serial.position import PositionRegistry
from gateway.simulators.serial.pty import Faults, PtySimulator


async def _started(sim: PtySimulator, *, silent: bool = False) -> PtySimulator:
    await sim.start()
    sim.silence(silent)
    return sim


async def test_sds011_with_faults_each_valid_frame_once(tmp_path: Path) -> None:
    link = tmp_path / "ttySDS"
    faults = Faults(noise=0.3, bad_checksum=0.1, truncate=0.1)
    sim = await _started(PtySimulator(device="sds011", link=link, rate_hz=50, faults=faults, seed=7), silent=True)
    try:
        async with running_driver(name="pm", port=str(link), profile="sds011") as run:
            await wait_until(lambda: run.driver.status()["open"])
            sim.silence(False)  # only now: opening the port flushes what was already queued
            await wait_until(lambda: len(sim.sent) >= 80)
            sim.silence(True)
            valid = [f.values for f in sim.sent if f.valid]
            await wait_until(lambda: len(run.frames()) >= len(valid), timeout=5)
            assert run.frames() == valid
            assert run.errors["bad_checksum"] > 0
            assert run.errors["garbage"] > 0
            assert {r.unit for r in run.readings} == {"ug/m3"}
            assert {r.device for r in run.readings} == {"pm"}
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    ("device", "profile"),
    [("pms5003", "pms5003"), ("kv", "maker-climate-kv"), ("csv", "maker-climate-csv"), ("json", "maker-climate-json")],
)
async def test_profiles_decode_simulated_devices(tmp_path: Path, device: str, profile: str) -> None:
    link = tmp_path / f"tty{device}"
    sim = await _started(
        PtySimulator(device=device, link=link, rate_hz=50, faults=Faults(noise=0.2, bad_checksum=0.1), seed=3),
        silent=True,
    )
    try:
        async with running_driver(name=device, port=str(link), profile=profile) as run:
            await wait_until(lambda: run.driver.status()["open"])
            sim.silence(False)
            await wait_until(lambda: len(sim.sent) >= 30)
            sim.silence(True)
            valid = [f.values for f in sim.sent if f.valid]
            await wait_until(lambda: len(run.frames()) >= len(valid), timeout=5)
            assert len(run.frames()) == len(valid)
            for got, sent in zip(run.frames(), valid, strict=True):
                assert got == pytest.approx(sent)
            assert sum(run.errors.values()) > 0  # the corrupted frames were counted, not decoded
    finally:
        await sim.stop()


@pytest.mark.slow
async def test_unplug_and_replug_logged_once_each_way(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    link = tmp_path / "ttyUSB-by-id"
    sim = await _started(PtySimulator(device="sds011", link=link, rate_hz=20))
    logger = logging.getLogger("test.serial.unplug")
    caplog.set_level(logging.INFO, logger="test.serial.unplug")
    try:
        async with running_driver(name="pm", port=str(link), profile="sds011", logger=logger, reconnect_max=0.5) as run:
            await wait_until(lambda: len(run.readings) >= 4)
            sim.unplug()
            await wait_until(lambda: run.driver.ctx.is_down("pm"))
            await wait_until(lambda: run.errors["open_failed"] >= 2)  # it keeps trying while unplugged
            before = len(run.readings)
            sim.replug()
            await wait_until(lambda: len(run.readings) >= before + 4)
            assert not run.driver.ctx.is_down("pm")
            assert run.errors["port_lost"] == 1
            assert run.driver.status()["reopens"] == 1
    finally:
        await sim.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "test.serial.unplug"]
    assert len([m for m in messages if "not answering" in m]) == 1
    assert len([m for m in messages if "answering again" in m]) == 1


@pytest.mark.slow
async def test_port_missing_at_start_then_appears(tmp_path: Path) -> None:
    link = tmp_path / "ttyLater"
    async with running_driver(name="pm", port=str(link), profile="pms5003", reconnect_max=0.3) as run:
        await wait_until(lambda: run.driver.ctx.is_down("pm"))
        sim = await _started(PtySimulator(device="pms5003", link=link, rate_hz=20))
        try:
            await wait_until(lambda: len(run.readings) >= 3)
            assert not run.driver.ctx.is_down("pm")
        finally:
            await sim.stop()


@pytest.mark.parametrize(("device", "profile"), [("sds011", "sds011"), ("pms5003", "pms5003")])
async def test_query_mode_asks_for_each_measurement(tmp_path: Path, device: str, profile: str) -> None:
    link = tmp_path / f"tty{device}"
    sim = await _started(PtySimulator(device=device, link=link, rate_hz=0.2))  # spontaneous frames: rare
    try:
        async with running_driver(
            name="pm", port=str(link), profile=profile, decoder={"mode": "query"}, interval=0.1
        ) as run:
            await wait_until(lambda: sim.query_mode)  # the driver switched the sensor to query/passive mode
            await wait_until(lambda: len(run.frames()) >= 5)
            assert run.errors == {}  # the command replies are understood, not counted as errors
    finally:
        await sim.stop()


async def test_working_period_command_reaches_the_sensor(tmp_path: Path) -> None:
    link = tmp_path / "ttySDS"
    sim = await _started(PtySimulator(device="sds011", link=link, rate_hz=20))
    try:
        async with running_driver(name="pm", port=str(link), profile="sds011", decoder={"working_period": 5}) as run:
            await wait_until(lambda: len(run.frames()) >= 2)
            assert run.driver.silence_timeout == 600  # a sleeping sensor is not a dead one
            assert run.errors == {}
    finally:
        await sim.stop()


@pytest.mark.slow
async def test_silence_marks_device_down_then_up(tmp_path: Path) -> None:
    link = tmp_path / "ttyKV"
    sim = await _started(PtySimulator(device="kv", link=link, rate_hz=20))
    try:
        async with running_driver(name="kv", port=str(link), profile="maker-climate-kv", silence_timeout=0.4) as run:
            await wait_until(lambda: len(run.readings) >= 3)
            sim.silence(True)
            await wait_until(lambda: run.driver.ctx.is_down("kv"))
            sim.silence(False)
            await wait_until(lambda: not run.driver.ctx.is_down("kv"))
            assert run.errors["port_lost"] == 0  # quiet, not gone: the port stayed open
    finally:
        await sim.stop()


async def test_gps_position_is_data_of_other_sources_not_a_tag(tmp_path: Path) -> None:
    positions = PositionRegistry()
    gps = await _started(PtySimulator(device="nmea", link=tmp_path / "ttyGPS", rate_hz=20))
    pm = await _started(PtySimulator(device="sds011", link=tmp_path / "ttySDS", rate_hz=20))
    try:
        async with (
            running_driver(name="gps", port=str(tmp_path / "ttyGPS"), profile="nmea-gps", positions=positions) as g,
            running_driver(
                name="pm", port=str(tmp_path / "ttySDS"), profile="sds011", position_from="gps", positions=positions
            ) as p,
        ):
            await wait_until(lambda: any(r.quantity == "latitude" for r in p.readings))
            fixes = {r.quantity for r in g.readings}
            assert {"latitude", "longitude", "altitude", "gps_fix_quality", "gps_satellites", "speed"} <= fixes
            lat = next(r for r in p.readings if r.quantity == "latitude")
            lon = next(r for r in p.readings if r.quantity == "longitude")
            assert (lat.device, lat.unit, lon.unit) == ("pm", "lat", "lon")
            assert lat.value == pytest.approx(53.3613, abs=0.01) and lon.value == pytest.approx(-6.5056, abs=0.01)
            # stamped like the frame it came with, and no position tag: the series set stays fixed
            assert any(r.quantity == "pm2_5" and r.ts_ns == lat.ts_ns for r in p.readings)
            assert all("lat" not in r.tags for r in p.readings)
    finally:
        await gps.stop()
        await pm.stop()


async def test_position_readings_only_when_the_fix_moves_and_coarse_tags_on_request(tmp_path: Path) -> None:
    from gateway.drivers.serial.measurement import Position

    positions = PositionRegistry()
    positions.publish("gps", Position(53.3613371, -6.5056204))
    pm = await _started(PtySimulator(device="sds011", link=tmp_path / "ttySDS", rate_hz=20))
    try:
        async with running_driver(
            name="pm", port=str(tmp_path / "ttySDS"), profile="sds011", position_from="gps", positions=positions,
            position_tag_decimals=2, position_max_age=3600,
        ) as p:  # fmt: skip
            await wait_until(lambda: sum(r.quantity == "pm2_5" for r in p.readings) >= 5)
            assert [r.value for r in p.readings if r.quantity == "latitude"] == [53.3613371]  # once: it did not move
            positions.publish("gps", Position(53.3700000, -6.5056204))
            await wait_until(lambda: sum(r.quantity == "latitude" for r in p.readings) == 2)
            assert {(r.tags["lat"], r.tags["lon"]) for r in p.readings} <= {("53.36", "-6.51"), ("53.37", "-6.51")}
    finally:
        await pm.stop()


async def test_nmea_fixes_survive_noise_glued_to_the_sentence(tmp_path: Path) -> None:
    # issue 8: noise without a line end made the next sentence count as malformed (7 of 50 fixes lost).
    link = tmp_path / "ttyGPS"
    sim = await _started(
        PtySimulator(device="nmea", link=link, rate_hz=50, faults=Faults(glued_noise=0.5), seed=5), silent=True
    )
    try:
        async with running_driver(name="gps", port=str(link), profile="nmea-gps") as run:
            await wait_until(lambda: run.driver.status()["open"])
            sim.silence(False)
            await wait_until(lambda: len(sim.sent) >= 40)
            sim.silence(True)
            sent = len(sim.sent)
            await wait_until(lambda: len([r for r in run.readings if r.quantity == "gps_fix_quality"]) >= sent)
            assert len([r for r in run.readings if r.quantity == "gps_fix_quality"]) == sent
            assert run.errors["garbage"] > 0 and run.errors["malformed_nmea"] == 0
    finally:
        await sim.stop()
